//! A missing ONNX Runtime, and one older than 1.24, are refused with an error, not a panic
//! (their own test binary: a process loads one runtime, and none is loaded here). The "old runtime" is a real shared library built here
//! with the C compiler, exporting `OrtGetApiBase` with version 1.16.3, as a 1.16 build does.

use std::process::Command;

use sluice_stage_embeddings::{Embedder, ModelError, ModelSpec};

const FAKE_ORT: &str = r#"
typedef struct { const void* (*GetApi)(unsigned); const char* (*GetVersionString)(void); } OrtApiBase;
static const void* get_api(unsigned v) { (void)v; return 0; }
static const char* version(void) { return "1.16.3"; }
static const OrtApiBase base = { get_api, version };
const OrtApiBase* OrtGetApiBase(void) { return &base; }
"#;

#[test]
fn a_missing_or_old_onnx_runtime_is_refused_with_an_error() {
    let model_dir =
        std::env::var("SLUICE_MODEL_DIR").expect("SLUICE_MODEL_DIR is not set: run tests/run.sh");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ort.c");
    std::fs::write(&src, FAKE_ORT).unwrap();
    let lib = dir.path().join("libonnxruntime.so.1.16.3");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success(), "building the stand-in library");
    let mut spec = ModelSpec::new(model_dir);
    spec.onnxruntime = Some("/nonexistent/libonnxruntime.so".into());
    let e = Embedder::load(&spec).unwrap_err();
    assert!(matches!(e, ModelError::NoRuntime { .. }), "{e}");
    assert!(
        e.to_string().contains("/nonexistent/libonnxruntime.so"),
        "{e}"
    );

    spec.onnxruntime = Some(lib.clone());
    let e = Embedder::load(&spec).unwrap_err();
    assert!(matches!(e, ModelError::Runtime { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("1.16.3") && msg.contains(lib.to_str().unwrap()),
        "{msg}"
    );
}
