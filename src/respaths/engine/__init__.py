"""The lesion engine: many plans over a dataset, sharing every computation they share (trie), the batches
it walks (batching), how it runs them (options: EngineOptions) and its speed tricks (speed).

The names of each module are importable from here too.
"""
from .trie import (  # noqa: F401
    Node,
    PlanResult,
    build_trie,
    check_inputs_untouched,
    evaluate_plans,
    nbytes,
    trie_cost)
from .batching import (  # noqa: F401
    batch_length,
    count_examples,
    first_examples,
    iterate_batches,
    iterate_data)
from .options import (  # noqa: F401
    DEFAULT_CACHE_BYTES,
    DTYPES,
    EngineOptions,
    as_dtype)
from .speed import (  # noqa: F401
    compiled_block_runner,
    conv_bn_pairs,
    optimise)
