//! Cross-checks of mpq against the tract ONNX runtime: the tests live in `tests/`; this
//! library is empty.
