"""Evaluate a checkpoint: lm-eval tasks and validation NLL on held-out data.

    python -m apps.main.eval config=<eval yaml> [ckpt_dir=<step folder or its consolidated/> dump_dir=<new folder>]
    torchrun --nproc-per-node N -m apps.main.eval config=...   (lm-eval shares the requests among the processes)

The YAML holds EvalArgs (below). Results: `dump_dir/config.yaml`, `dump_dir/results.json` (lm-eval's full output),
`dump_dir/validation.json`, and with `metric_log_dir` one line each appended to `metric_log_dir/metrics.eval.jsonl`
(`created_at` (timezone-aware), `global_step`, then per task lm-eval's dict such as {"acc,none": 0.61}) and
`metric_log_dir/metrics.validation.jsonl` (per source its metrics). Training runs this in-process after its eval
checkpoints (lingua.training), with `metric_log_dir` = the run's dump_dir.

What the numbers are:
  - loglikelihood scores exactly the continuation tokens (requests are split into context and continuation as
    lm-eval's Hugging Face model splits them), so one-token answers such as MMLU's " A" are scored like any other;
  - loglikelihood_rolling uses lm-eval's rolling windows of max_seqlen, so long texts are scored whole;
  - generate_until honours lm-eval's max_gen_toks and cuts the text at the stop string that ended it;
  - validation reports NLLs (positive): nll_per_token = total NLL / scored tokens and nll_per_char = total NLL /
    characters over all documents of all ranks (token-weighted, so exp(nll_per_token) is the perplexity), nll =
    mean NLL per document, avg_seqlen = mean scored tokens per document. Documents are read as training reads them
    (BOS and EOS as in the training config) and every token after the first is scored; long documents are cut into
    windows of max_seqlen;
  - validation covers ValidationArgs.sources under ValidationArgs.root_dir and, when use_val_from_train_src, the
    training sources that have *.val.jsonl files;
  - unknown tasks or validation sources are one clear error before anything is written; `created_at` is
    timezone-aware (as in metrics.jsonl).
"""

import json
import logging
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lm_eval import simple_evaluate
from lm_eval.api.model import TemplateLM
from lm_eval.tasks import TaskManager
from lm_eval.utils import get_rolling_token_windows, handle_non_serializable, make_disjoint_window

from apps.main.generate import (
    LeftPaddedGenerator,
    LeftPaddedGeneratorArgs,
    check_generator_args,
    cut_at_stop,
    load_consolidated_model_and_tokenizer,
)
from lingua.args import ConfigError, dataclass_to_dict, dump_config, parse_args
from lingua.atomic import write_atomic
from lingua.checkpoint import CONFIG_NAME, CONSOLIDATE_FOLDER, CONSOLIDATE_NAME, STEP_FOLDER, consolidate_checkpoint
from lingua.data import find_chunks, iter_validation_documents
from lingua.distributed import (
    DistributedArgs,
    all_reduce_sum,
    barrier,
    clean_up,
    get_is_master,
    get_world_size,
    setup_torch_distributed,
)
from lingua.logger import init_logger

logger = logging.getLogger()

RESULTS_NAME = "results.json"
VALIDATION_NAME = "validation.json"


@dataclass
class LMHarnessArgs:
    """Keyword arguments of lm-eval's simple_evaluate (all but the last two are passed as they are)."""

    tasks: list[Any] | None = None  # task names, or task-config maps
    num_fewshot: int | None = None
    device: str | None = None
    use_cache: str | None = None
    cache_requests: bool = False
    rewrite_requests_cache: bool = False
    delete_requests_cache: bool = False
    limit: float | None = None
    bootstrap_iters: int = 100000
    check_integrity: bool = False
    write_out: bool = False
    log_samples: bool = True
    system_instruction: str | None = None
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = False
    gen_kwargs: Any | None = None
    verbosity: str = "INFO"
    predict_only: bool = False
    random_seed: int = 0
    numpy_random_seed: int = 1234
    torch_random_seed: int = 1234
    fewshot_random_seed: int = 1234
    # additions: where lm-eval finds tasks (folders of task YAMLs; lm-eval's own thousands of tasks unless false)
    include_path: str | None = None
    include_defaults: bool = True


@dataclass
class ValidationArgs:
    max_steps: int | None = None  # documents per rank and source (None: all)
    use_val_from_train_src: bool = True  # also the training sources (params.json data) that have *.val.jsonl
    root_dir: str = ""
    sources: list[str] = field(default_factory=list)


@dataclass
class EvalArgs:
    name: str = "evals"
    dump_dir: str | None = None
    metric_log_dir: str | None = None
    ckpt_dir: str = ""
    generator: LeftPaddedGeneratorArgs = field(default_factory=LeftPaddedGeneratorArgs)
    harness: LMHarnessArgs | None = field(default_factory=LMHarnessArgs)
    validation: ValidationArgs | None = field(default_factory=ValidationArgs)
    wandb: Any | None = None  # accepted for recipe compatibility; unused
    global_step: int | None = None


# ----------------------------------------------------------------------------------------------------------------
# lm-eval adapter
# ----------------------------------------------------------------------------------------------------------------


class EvalHarnessLM(TemplateLM):
    """lm-eval's model interface over the generator. Requests are tokenized by lm-eval's TemplateLM (context and
    continuation split as HFLM does) without BOS; every process of a job takes its share (lm-eval shards by rank)."""

    def __init__(self, generator: LeftPaddedGenerator):
        super().__init__()
        self.generator = generator
        if dist.is_initialized():
            self._rank, self._world_size = dist.get_rank(), dist.get_world_size()

    @property
    def eot_token_id(self) -> int:
        return self.generator.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.generator.empty_prompt[0]

    @property
    def max_length(self) -> int:
        return self.generator.max_seqlen

    @property
    def device(self):
        return self.generator.device

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return self.generator.encode(string)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), whether every continuation token is the argmax): the model reads
        (context + continuation)[:-1] (the last max_length + 1 tokens), and the last len(continuation) positions
        predict exactly the continuation tokens."""
        sequences = [(context + continuation)[-(self.max_length + 1) :] for _, context, continuation in requests]
        answers = []
        for (request, _, continuation), (logprobs, greedy) in zip(
            requests, self.generator.score(sequences), strict=True
        ):
            n = min(len(continuation), len(logprobs))  # a continuation longer than max_length keeps its end
            answer = (float(logprobs[len(logprobs) - n :].sum()), bool(greedy[len(greedy) - n :].all()))
            if request is not None:
                self.cache_hook.add_partial("loglikelihood", request, answer)
            answers.append(answer)
        return answers

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts, in disjoint windows of max_length tokens (the first one conditioned on
        the prefix token), as HFLM computes it."""
        windows, owners = [], []
        for index, (text,) in enumerate(request.args for request in requests):
            pieces = get_rolling_token_windows(self.tok_encode(text), self.prefix_token_id, self.max_length, 1)
            for context, predicted in map(make_disjoint_window, pieces):
                windows.append((None, context, predicted))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows), strict=True):
            totals[owner] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Generations for requests (context, gen_kwargs), grouped by identical gen_kwargs: `until` stop strings,
        `max_gen_toks` (default: the generator's max_gen_len), do_sample/temperature/top_p/top_k. Each text is cut
        at the stop string that ended it."""
        groups = defaultdict(list)
        for index, request in enumerate(requests):
            groups[json.dumps(request.args[1], sort_keys=True, default=str)].append(index)
        results = [None] * len(requests)
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            do_sample = kwargs.pop("do_sample", None)
            temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0))
            sampling = dict(
                temperature=0.0 if do_sample is False else temperature,
                top_p=kwargs.pop("top_p", None),
                top_k=kwargs.pop("top_k", None),
            )
            max_gen_len = int(kwargs.pop("max_gen_toks", self.generator.cfg.max_gen_len))
            if kwargs:
                logger.warning(f"generate_until ignores the generation arguments {sorted(kwargs)}")
            contexts = [requests[i].args[0] for i in indices]
            texts = self.generator.generate(contexts, max_gen_len=max_gen_len, until=until, **sampling)
            for index, text in zip(indices, texts, strict=True):
                results[index] = cut_at_stop(text, until)
                self.cache_hook.add_partial("generate_until", requests[index].args, results[index])
        return results

    # what lm-eval's evaluator calls with several processes
    def all_gather(self, tensor):
        if self.world_size == 1:
            return tensor
        parts = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

    def gather_object(self, obj, dst=0):
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, gathered, dst=dst)
        return gathered

    def barrier(self) -> None:
        barrier()


# ----------------------------------------------------------------------------------------------------------------
# Validation NLL
# ----------------------------------------------------------------------------------------------------------------


def validation_sources(cfg: ValidationArgs, train_data: dict) -> dict[str, tuple[str, str]]:
    """{name: (root_dir, source)}: every configured source (which must have *.val.jsonl files), then the training
    sources that have some; names are the source folders' basenames, `_1`, `_2`... added on a clash."""
    entries = []
    for source in cfg.sources:
        find_chunks(cfg.root_dir, source, "*.val.jsonl")  # one clear error when missing
        entries.append((cfg.root_dir, source))
    if cfg.use_val_from_train_src and train_data.get("root_dir"):
        for source in train_data.get("sources") or {}:
            if list(Path(train_data["root_dir"], source).glob("*.val.jsonl")):
                entries.append((train_data["root_dir"], source))
    named = {}
    for root, source in entries:
        name, base, k = os.path.basename(os.path.normpath(source)), os.path.basename(os.path.normpath(source)), 0
        while name in named:
            k += 1
            name = f"{base}_{k}"
        named[name] = (root, source)
    return named


def eval_on_val(generator, sources: dict, train_data: dict, max_docs: int | None) -> dict:
    """Per source: nll, nll_per_token, nll_per_char (when every document is text), avg_seqlen, n_documents,
    n_tokens; see the module docstring. Every process reads its share of the lines and the sums are reduced."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    add_bos, add_eos = train_data.get("add_bos", True), train_data.get("add_eos", True)
    results = {}
    for name, (root, source) in sources.items():
        nll = tokens = chars = documents = text_documents = 0.0
        pieces, masks = [], []  # every window of every document, scored in batches
        for document in iter_validation_documents(
            root, source, generator.tokenizer, rank, world, add_bos, add_eos, max_docs
        ):
            for piece, mask in document.windows(generator.max_seqlen):
                if len(piece) >= 2:
                    pieces.append(piece.tolist())
                    masks.append(mask[1:])
            documents += 1
            if document.n_chars is not None:
                chars += document.n_chars
                text_documents += 1
        for mask, (logprobs, _) in zip(masks, generator.score(pieces) if pieces else [], strict=True):
            nll -= float(logprobs[mask].sum())
            tokens += float(mask.sum())
        nll, tokens, chars, documents, text_documents = all_reduce_sum([nll, tokens, chars, documents, text_documents])
        metrics = dict(
            nll=nll / max(documents, 1),
            nll_per_token=nll / max(tokens, 1),
            avg_seqlen=tokens / max(documents, 1),
            n_documents=int(documents),
            n_tokens=int(tokens),
        )
        if documents and text_documents == documents and chars:
            metrics["nll_per_char"] = nll / chars
        results[name] = metrics
    return results


# ----------------------------------------------------------------------------------------------------------------
# One evaluation
# ----------------------------------------------------------------------------------------------------------------


def consolidated_folder(ckpt_dir: str) -> Path:
    """ckpt_dir itself when it holds consolidated files, else its consolidated/ subfolder (maybe not written yet)."""
    folder = Path(ckpt_dir)
    if (folder / CONSOLIDATE_NAME).is_file() and (folder / CONFIG_NAME).is_file():
        return folder
    return folder / CONSOLIDATE_FOLDER


def check_eval_args(cfg: EvalArgs) -> TaskManager | None:
    """Every check that needs no model: raises one clear error, writes nothing. Returns the TaskManager that knows
    the configured tasks (None without harness)."""
    check_generator_args(cfg.generator)
    if cfg.harness is None:
        return None
    if not cfg.harness.tasks:
        raise ConfigError("eval harness.tasks is empty; expected a list of lm-eval task names (or harness: null)")
    manager = TaskManager(include_path=cfg.harness.include_path, include_defaults=cfg.harness.include_defaults)
    known = set(manager.all_tasks)
    for task in cfg.harness.tasks:
        name = task.get("task") if isinstance(task, dict) and "dataset_path" not in task else task
        if isinstance(name, str) and name not in known:
            raise ConfigError(
                f"unknown lm-eval task {name!r}; expected one of lm-eval's task or group names"
                + (f" (or a task under include_path={cfg.harness.include_path})" if cfg.harness.include_path else "")
            )
    return manager


def launch_eval(cfg: EvalArgs) -> dict | None:
    """Evaluate the checkpoint `cfg.ckpt_dir` (every process of the job takes part). Returns, on rank 0,
    {"harness": lm-eval's output or None, "validation": {source: metrics} or None}."""
    if not cfg.dump_dir:
        raise ConfigError("eval dump_dir is not set; expected a new folder for the results")
    for name in (RESULTS_NAME, VALIDATION_NAME):
        if os.path.exists(os.path.join(cfg.dump_dir, name)):
            raise FileExistsError(f"{cfg.dump_dir} already holds {name}; choose a new dump_dir")
    folder = consolidated_folder(cfg.ckpt_dir)
    if not (folder / CONSOLIDATE_NAME).is_file() and not (folder.parent / ".metadata").is_file():
        raise FileNotFoundError(
            f"ckpt_dir={cfg.ckpt_dir!r} is neither a checkpoint folder (.metadata) nor a consolidated folder "
            f"({CONSOLIDATE_NAME} + {CONFIG_NAME})"
        )
    task_manager = check_eval_args(cfg)
    params = folder / CONFIG_NAME if (folder / CONFIG_NAME).is_file() else folder.parent / CONFIG_NAME
    train_config = json.loads(params.read_text())
    sources = validation_sources(cfg.validation, train_config.get("data") or {}) if cfg.validation else {}
    if cfg.global_step is None and STEP_FOLDER.match(folder.parent.name):
        cfg.global_step = int(folder.parent.name)

    if get_world_size() > 1 and not dist.is_initialized():
        setup_torch_distributed(DistributedArgs())
    if get_is_master():
        if not (folder / CONSOLIDATE_NAME).is_file():
            consolidate_checkpoint(folder.parent)
        os.makedirs(cfg.dump_dir, exist_ok=True)
        dump_config(cfg, os.path.join(cfg.dump_dir, "config.yaml"))
    barrier()

    model, tokenizer = load_consolidated_model_and_tokenizer(folder, cfg.generator.device, cfg.generator.dtype)
    generator = LeftPaddedGenerator(cfg.generator, model, tokenizer)
    harness = validation = None
    if cfg.harness is not None:
        logger.info(f"evaluating {folder} on {cfg.harness.tasks}")
        options = dataclass_to_dict(cfg.harness)
        del options["include_path"], options["include_defaults"]
        harness = simple_evaluate(EvalHarnessLM(generator), task_manager=task_manager, **options)
    if sources:
        logger.info(f"validation NLL on {sorted(sources)}")
        validation = eval_on_val(generator, sources, train_config.get("data") or {}, cfg.validation.max_steps)

    if get_is_master():
        created_at = datetime.now(timezone.utc).isoformat()
        stamp = {"created_at": created_at, "global_step": cfg.global_step}
        if harness is not None:
            text = json.dumps(harness, indent=2, default=handle_non_serializable, ensure_ascii=False)
            write_atomic(os.path.join(cfg.dump_dir, RESULTS_NAME), text)
            append_metrics(cfg.metric_log_dir, "metrics.eval.jsonl", {**stamp, **harness["results"]})
        if validation is not None:
            write_atomic(os.path.join(cfg.dump_dir, VALIDATION_NAME), json.dumps(validation, indent=2))
            append_metrics(cfg.metric_log_dir, "metrics.validation.jsonl", {**stamp, **validation})
        logger.info(f"evaluation results in {cfg.dump_dir}")
    barrier()
    del model, generator
    return {"harness": harness, "validation": validation} if get_is_master() else None


def append_metrics(folder: str | None, name: str, line: dict) -> None:
    if folder:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "a") as f:
            f.write(json.dumps(line, default=handle_non_serializable) + "\n")


def main(argv=None) -> int:
    try:
        cfg = parse_args(EvalArgs, argv)
        init_logger()
        launch_eval(cfg)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        clean_up()
    return 0


if __name__ == "__main__":
    sys.exit(main())
