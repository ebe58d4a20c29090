"""llama.cpp: binaries, processes, GGUF files and the model store."""
