//! Shared harness for the end-to-end tests (binary location, temp dirs).
