//! The model as the stage loads it: vectors against an independent reference, and the
//! start-up checks that turn fastembed's panics into errors. Needs the model files
//! (`SLUICE_MODEL_DIR`, set by tests/run.sh after `fetch-model.sh`).

use std::path::{Path, PathBuf};

use sluice_stage_embeddings::{chunks, Embedder, ModelError, ModelSpec, MAX_TOKENS};

fn model_dir() -> PathBuf {
    PathBuf::from(std::env::var("SLUICE_MODEL_DIR").expect(
        "SLUICE_MODEL_DIR is not set: run the suite with tests/run.sh (it runs stages/embeddings/fetch-model.sh)",
    ))
}

fn spec() -> ModelSpec {
    let mut s = ModelSpec::new(model_dir());
    s.onnxruntime = Some(model_dir().join("libonnxruntime.so"));
    s
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn vectors_match_the_fp32_reference_computed_independently() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("data/reference.json")).unwrap();
    let sentences = reference["sentences"].as_array().unwrap();
    assert!(sentences.len() >= 5);
    let model = Embedder::shared(&spec()).expect("model loads");
    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    // Batch size 3 over 8 texts of different lengths: padding and reordering must not matter.
    let got = model.embed(&texts, 3).unwrap();
    assert_eq!(got.len(), texts.len());
    for (s, v) in sentences.iter().zip(&got) {
        let want: Vec<f32> = s["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "unit length, got {norm}");
        let c = cosine(v, &want);
        assert!(c >= 0.999, "cosine {c} < 0.999 for {:?}", s["text"]);
    }
    // Unrelated sentences stay apart: the guard is not passed by any vector.
    assert!(cosine(&got[0], &got[4]) < 0.5);
}

#[test]
fn long_texts_are_cut_at_token_boundaries_into_model_sized_chunks() {
    let model = Embedder::shared(&spec()).expect("model loads");
    let text: String = (0..400)
        .map(|i| format!("word{i} "))
        .collect::<String>()
        .trim()
        .to_string();
    let offsets = model.token_offsets(&text);
    assert!(
        offsets.len() > 600,
        "word123 is several tokens: {}",
        offsets.len()
    );
    let pieces = chunks(&text, &offsets, MAX_TOKENS - 2, 32, 100);
    assert!(pieces.len() >= 3);
    assert!(pieces[0].starts_with("word0"));
    assert!(pieces.last().unwrap().ends_with("word399"));
    for p in &pieces {
        assert!(
            model.token_offsets(p).len() <= MAX_TOKENS - 2,
            "a chunk fits the model"
        );
    }
}

fn copy_model(to: &Path, skip: &str) {
    for f in [
        "model.onnx",
        "tokenizer.json",
        "config.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        if f != skip {
            std::fs::copy(model_dir().join(f), to.join(f)).unwrap();
        }
    }
}

#[test]
fn missing_files_and_wrong_checksums_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path(), "tokenizer.json");
    let mut s = spec();
    s.dir = dir.path().to_path_buf();
    let e = Embedder::load(&s).unwrap_err();
    assert!(
        matches!(&e, ModelError::Missing { path } if path.ends_with("tokenizer.json")),
        "{e}"
    );
    assert!(e.to_string().contains("fetch-model.sh"), "{e}");

    std::fs::copy(
        model_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut onnx = std::fs::read(dir.path().join("model.onnx")).unwrap();
    let n = onnx.len();
    onnx[n / 2] ^= 0xff;
    std::fs::write(dir.path().join("model.onnx"), onnx).unwrap();
    let e = Embedder::load(&s).unwrap_err();
    assert!(matches!(e, ModelError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("8199be6f"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    s.dir = empty.path().to_path_buf();
    assert!(
        matches!(Embedder::load(&s).unwrap_err(), ModelError::Missing { path } if path.ends_with("model.onnx"))
    );
}
