"""Examples for the reference topology: its handlers (`explorer_handlers`) and `make demo` (`demo`)."""
