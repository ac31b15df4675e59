"""Knowledge-neuron attribution: integrated gradients (IG) over the FFN neurons, batched, in two variants.

A *neuron* is one input unit of an MLP down projection (the adapter's neuron view); masks always select the
down projection's input columns. For one prompt and its answer, each neuron of each layer gets a score: an
integrated-gradients style sum of the gradient of the target (probability of the answer token, see
:class:`AttributionConfig`) along a straight path from a baseline ``b`` to the actual value ``a`` at the last
prompt position, with *only layer l* moved along the path (every other layer untouched). Two variants
(``AttributionConfig.method``):

``"memla4mke"`` (default: what the paper's released locator computes; ``identify_kn/locate_kn.py`` ->
``AMIG/knowledge_neurons/garns.py``, class ``garns``, with ``knowledge_neurons.py`` and ``patch.py``)::

    score[l, n] = a_0[l, n] * sum_i 1/steps * sum_{k=0}^{steps-1} dF_i/dx[l, n] (b_i + k/steps (a_i - b_i))

1. the path runs over the *output of the gate projection* (before the activation) of gated MLPs, or of the
   first projection (``c_fc``/``dense_h_to_4h``) otherwise (``KnowledgeNeurons.__init__``: ``input_ff_attr``;
   ``patch.register_hook``/``Patch.forward`` read and replace that module's output at the last position);
2. the points are ``k/steps`` for ``k = 0 .. steps-1`` (``garns.scaled_input``: ``baseline + step * i`` for
   ``i in range(steps)``, ``step = (original - baseline) / steps``): the actual value is never on the path;
3. the summed gradient is multiplied by the *actual* value ``a_0`` divided by ``steps``, not by ``a - b``
   (``garns.get_scores_for_layer``: ``integrated_grads_this_step *= baseline_activations.squeeze(0) / steps``,
   where ``baseline_activations`` is the unmodified forward's value, see ``get_baseline_with_activations``);
   ``b_i`` (``baseline="eos_mean"``) is the mean over copies of the prompt with *each* token in turn (BOS and
   the last token included) replaced by EOS (``garns.scaled_input``);
4. multi-token answers: memla4mke's answer ids are ``tokenizer.encode(answer)`` (special tokens included, no
   leading space: ``KnowledgeNeurons._prepare_inputs``); here they come from this project's join (the answer
   part of ``prompt + separator + answer`` tokenized as one string, no BOS: how text becomes tokens is this
   project's rule, not memla4mke's); token ``i`` is attributed at the last position of the prompt
   text extended by ``i`` copies of the *greedy* next token of the original prompt (its ``baseline_outputs``
   are computed once, before the loop, so ``next_token_str`` never changes), re-tokenized; ``a_i`` and ``b_i``
   come from that extended prompt, but the multiplier ``a_0`` is the original prompt's value; the per-token
   scores are *summed* (``D_accumulator += ...``; ``A_i = D_accumulator / k_path`` with ``k_path = 1``). The
   knowledge-neurons base class (``KnowledgeNeurons.get_scores_for_layer``) averages over tokens instead; the
   ``garns`` subclass that ``locate_kn.py`` instantiates overrides it and sums.

``"exact"`` (the companion's exact IG of the neurons themselves)::

    score[l, n] = (a[l, n] - b[l, n]) * mean_k dF/dx[l, n] (b + alpha_k (a - b)),  alpha_k = linspace(0, 1, steps)

at the down projection's input (both endpoints included, divided by ``steps``), with ``b`` the EOS mean over the
ordinary (non-special) tokens of the prefix. A multi-token answer is attributed token by token with teacher
forcing: for answer token ``i`` the prompt is ``prompt ⧺ answer[:i]`` and its last position is the one scaled;
the scores are summed over tokens. Its completeness (sum of scores = F(a) - F(b), up to Riemann error) holds.

In both variants a prompt's neurons are those above ``threshold`` x its maximum score over all layers, and a
record's set is the union over its prompts (``garns.get_coarse_neurons``, ``garns.get_refined_neurons``).

The code, one job a module (this one is the public entry point and re-exports the API):

- :mod:`memla_utils.attribution_config`: :class:`AttributionConfig`, the allowed values, ``SCORES_VERSION``;
- :mod:`memla_utils.attribution_prep`: tokenization, clean run, baseline, chunked vocabulary projection;
- :mod:`memla_utils.attribution_ig`: the batched pass (why it is fast, self-checks), :func:`attribute_batch`;
- :mod:`memla_utils.attribution_stair`: the staircase forward the batched pass runs its chunks in;
- :mod:`memla_utils.attribution_reference`: the knowledge-neurons style loop the batched pass replaces;
- :mod:`memla_utils.attribution_scores`: one prompt's scores, their compact form and thresholding;
- :mod:`memla_utils.attribution_records`: a record's prompts, the cache, its knowledge neurons.
"""
from __future__ import annotations

# the allowed values of AttributionConfig's fields and the cache's score version, re-exported
from .attribution_config import ANSWERS as ANSWERS
from .attribution_config import BASELINES as BASELINES
from .attribution_config import HEAD_PRECISIONS as HEAD_PRECISIONS
from .attribution_config import METHODS as METHODS
from .attribution_config import SCORES_VERSION as SCORES_VERSION
from .attribution_config import TARGETS as TARGETS
from .attribution_config import AttributionConfig
from .attribution_ig import attribute_batch, attribute_prompt
from .attribution_records import knowledge_neurons, record_attributions, record_items
from .attribution_reference import attribute_prompt_loop
from .attribution_scores import COMPACT_FLOOR, PromptAttribution, neurons_from_attributions, threshold_scores

__all__ = ["COMPACT_FLOOR", "AttributionConfig", "PromptAttribution", "attribute_batch", "attribute_prompt",
           "attribute_prompt_loop", "knowledge_neurons", "neurons_from_attributions", "record_attributions",
           "record_items", "threshold_scores"]
