"""The processing pipeline: one module per stage around a typed :class:`ProcessState`.

Each stage module (``spotfind_stage``, ``index_stage``, ``refine_stage``,
``integrate_stage``, ``scale_stage``) has the same face: ``run(state, settings, ctx) ->
state`` and ``summary(state)``. Stages never import each other; :mod:`jfx.pipeline.run` is
the only place that knows their order and the retries. See docs/architecture.md.
"""

from jfx.pipeline.run import STAGE_SUMMARIES as STAGE_SUMMARIES
from jfx.pipeline.run import ProcessResult as ProcessResult
from jfx.pipeline.run import process as process
from jfx.pipeline.run import select_images as select_images
from jfx.pipeline.run import unimplemented_stages as unimplemented_stages
from jfx.pipeline.state import ImageSelection as ImageSelection
from jfx.pipeline.state import ProcessState as ProcessState
