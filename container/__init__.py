"""Apptainer definitions of the Megatron training images and the helper that renders them."""
