"""The GreenFormer: its config (no torch), the network, and loading it from a checkpoint source."""
