"""vLLM V1 engine logits processors of effreason's generation methods.

Imported by name inside vLLM's engine process (``LLM(logits_processors=["module:Class"])``), so this
module imports vLLM at the top and nothing else of effreason needs it. Each processor acts only on
requests whose ``SamplingParams.extra_args`` switch it on, so one engine serves runs with and without it.
"""

from __future__ import annotations

from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from effreason.generation.thinking_stop import EXTRA_ALPHA, EXTRA_IDS, request_processor


class ThinkingStopVLLM(AdapterLogitsProcessor):
    """Thinking-stop scaling (``effreason.generation.thinking_stop``): ``+alpha`` on ``</think>`` while thinking."""

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params):
        extra = params.extra_args or {}
        alpha = extra.get(EXTRA_ALPHA)
        if not alpha:  # absent or 0: leave the request alone
            return None
        start_id, end_id = extra[EXTRA_IDS]
        return request_processor(float(alpha), int(start_id), int(end_id))
