"""Where trials run: local worker processes or Ray Tune, behind one interface."""
