"""Pure tensor maths shared by the methods: no modules, no I/O, no global state."""
