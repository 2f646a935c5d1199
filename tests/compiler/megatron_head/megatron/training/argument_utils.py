# ruff: noqa  (written in Megatron-LM's own style: Optional, Union, List, relative imports)
# Stands in for Megatron's factory; the reader recognises it by name and never runs it.
class ArgumentGroupFactory:
    def __init__(self, src_cfg_class, exclude=None):
        self.src_cfg_class = src_cfg_class
        self.exclude = set(exclude or [])

    def build_group(self, parser, title=None):
        return parser.add_argument_group(title=title)
