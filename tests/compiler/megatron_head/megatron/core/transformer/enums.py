# ruff: noqa  (written in Megatron-LM's own style: Optional, Union, List, relative imports)
import enum


class AttnBackend(enum.Enum):
    flash = 1
    fused = 2
    unfused = 3
    local = 4
    auto = 5

    def _ignored(self):
        return self.value
