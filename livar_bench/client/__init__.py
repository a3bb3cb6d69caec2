"""Client-side work: local training, local objectives and the signals clients send."""
