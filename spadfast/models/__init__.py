"""Denoisers (UNet, cached-encoder UNet), the model factory, checkpoint files and the safetensors export."""
