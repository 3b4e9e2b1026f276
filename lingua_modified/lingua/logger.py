"""Logging set-up: one line format for every rank, stdout for all levels, stderr for warnings, a file on rank 0."""

import logging
import math
import sys
import time
from datetime import datetime, timedelta


class LogFormatter(logging.Formatter):
    """`LEVEL yy-mm-dd HH:MM:SS.micro - elapsed h:mm:ss - [rank: ]message`."""

    def __init__(self, rank: int | None = None):
        super().__init__()
        self.start = time.time()
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%y-%m-%d %H:%M:%S.%f")
        elapsed = timedelta(seconds=math.floor(record.created - self.start))
        rank = f"{self.rank}: " if self.rank is not None else ""
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        return f"{record.levelname:<7} {stamp} - {elapsed} - {rank}{message}"


def init_logger(log_file: str | None = None, rank: int | None = None, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    formatter = LogFormatter(rank)
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setLevel(logging.NOTSET)
    stdout.addFilter(lambda record: record.levelno < logging.WARNING)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    for handler in (stdout, stderr):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, mode="a")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
