//! The `sluice` command line: validation errors with positions, graphs, --set, --help.

mod common;

use common::{sluice, write_pipeline};

const VALID: &str = r#"name: t
dead_letter: dlq
topics:
  url-in: { partitions: 2 }
  urls: { partitions: 2 }
  dlq: { partitions: 1 }
stages:
  ingest:
    kind: ingest
    output: url-in
    auth: false
  normalize:
    kind: normalize-dedup
    input: url-in
    output: urls
"#;

/// Runs `sluice validate -f FILE EXTRA...`: exit code and stderr.
fn validate(file: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = sluice()
        .arg("validate")
        .arg("-f")
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_the_shipped_pipeline() {
    common::stdout_of(
        sluice()
            .args(["validate", "-f"])
            .arg(common::manifest_dir().join("pipeline.yaml")),
    );
}

#[test]
fn validate_reports_every_error_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let broken = VALID
        .replace("kind: normalize-dedup", "kind: normalise")
        .replace("output: urls", "output: urlz")
        .replace("auth: false", "auth: false\n    listen_on: 1");
    let file = write_pipeline(dir.path(), &broken);
    let (code, err) = validate(&file, &[]);
    assert_eq!(code, Some(1));
    let f = file.display().to_string();
    assert!(
        err.contains(&format!("{f}:12:5: error: unknown field `listen_on`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:14:11: error:")) && err.contains("normalise"),
        "{err}"
    );
    assert!(err.contains("urlz"), "{err}");
}

/// The recrawl clock has one owner: the normalize-dedup stage feeding a crawl. A crawl that
/// sets a different value is an error at that field; the same value, or none, is accepted;
/// a crawl fed from outside sets its own.
#[test]
fn validate_reports_a_crawl_that_disagrees_with_its_recrawl_clock() {
    let dir = tempfile::tempdir().unwrap();
    let with_crawl = |crawl_fields: &str| {
        format!(
            "{VALID}    recrawl_after: 2h\n    key_prefix: \"t:\"\n  crawl:\n    kind: crawl\n    input: urls\n    output: pages\n{crawl_fields}"
        )
        .replace("  dlq: { partitions: 1 }\n", "  dlq: { partitions: 1 }\n  pages: { partitions: 1 }\n")
    };
    let file = write_pipeline(dir.path(), &with_crawl("    recrawl_after: 3h\n"));
    let (code, err) = validate(&file, &[]);
    assert_eq!(code, Some(1), "{err}");
    let f = file.display().to_string();
    assert!(
        err.contains(&format!("{f}:23:20: error: stage `crawl`:"))
            && err.contains("`recrawl_after` is 3h here but 2h on stage `normalize`"),
        "{err}"
    );
    let file = write_pipeline(dir.path(), &with_crawl("    key_prefix: \"other:\"\n"));
    let (code, err) = validate(&file, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("`key_prefix`") && err.contains("normalize"),
        "{err}"
    );
    for agreeing in ["", "    recrawl_after: 2h\n    key_prefix: \"t:\"\n"] {
        let file = write_pipeline(dir.path(), &with_crawl(agreeing));
        let (code, err) = validate(&file, &[]);
        assert_eq!(code, Some(0), "{agreeing}: {err}");
    }
    // Fed from outside (no normalize-dedup writes its input): its own clock settings stand.
    let outside = "name: t\ndead_letter: dlq\ntopics:\n  urls: { partitions: 1, type: crawl-url }\n  pages: { partitions: 1 }\n  dlq: { partitions: 1 }\nstages:\n  crawl:\n    kind: crawl\n    input: urls\n    output: pages\n    recrawl_after: 3h\n";
    let file = write_pipeline(dir.path(), outside);
    let (code, err) = validate(&file, &[]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn validate_reports_yaml_syntax_errors_and_set_origins() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), "name: t\ntopics:\n  a: { partitions: 1\n");
    let (code, err) = validate(&file, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("YAML syntax error"), "{err}");
    assert!(err.contains(&format!("{}:", file.display())), "{err}");

    let file = write_pipeline(dir.path(), VALID);
    let (code, err) = validate(&file, &["--set", "stages.normalize.replicas=many"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--set stages.normalize.replicas=many: error"),
        "{err}"
    );
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), VALID);
    let dot = sluice().arg("graph").arg("-f").arg(&file).output().unwrap();
    assert!(dot.status.success());
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("normalize") && dot.contains("url-in"), "{dot}");
    let mermaid = sluice()
        .arg("graph")
        .arg("-f")
        .arg(&file)
        .args(["--format", "mermaid"])
        .output()
        .unwrap();
    let mermaid = String::from_utf8_lossy(&mermaid.stdout);
    assert!(
        mermaid.contains("flowchart") || mermaid.contains("graph"),
        "{mermaid}"
    );
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["validate"],
        vec!["graph"],
        vec!["topics", "create"],
        vec!["run"],
        vec!["produce"],
        vec!["consume"],
    ] {
        let out = sluice().args(&cmd).arg("--help").output().unwrap();
        assert!(out.status.success(), "{cmd:?} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--file"),
            "{cmd:?}"
        );
    }
}

#[test]
fn produce_refuses_the_embedded_bus_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        &VALID.replace("name: t", "name: t\nbroker: memory"),
    );
    let out = sluice()
        .arg("produce")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seeds"));
}

#[test]
fn embedded_run_processes_seeds_and_exits_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        &VALID.replace(
            "    auth: false",
            "    auth: false\n    listen: 127.0.0.1:0",
        ),
    );
    let seeds = dir.path().join("seeds.txt");
    std::fs::write(
        &seeds,
        "https://a.example.org/\nHTTPS://A.example.org:443/#x\nnot a url\nhttp://b.example.org/p\n",
    )
    .unwrap();
    let out = sluice()
        .arg("run")
        .arg("-f")
        .arg(&file)
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--exit-when-idle",
            "1s",
            "--seeds",
        ])
        .arg(&seeds)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Four lines in; `not a url` is refused before sending; one duplicate after normalization.
    assert!(err.contains("url-in: 3 messages"), "{err}");
    assert!(err.contains("urls: 2 messages"), "{err}");
    assert!(err.contains("dlq: 0 messages"), "{err}");
}

#[test]
fn a_stage_misconfiguration_is_reported_without_waiting_for_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1; ingest needs API keys and has none.
    let yaml = VALID
        .replace("name: t", "name: t\nbroker: 127.0.0.1:1")
        .replace("    auth: false", "    listen: 127.0.0.1:0");
    let file = write_pipeline(dir.path(), &yaml);
    let mut child = sluice()
        .arg("run")
        .arg("-f")
        .arg(&file)
        .args(["--stage", "ingest", "--metrics-addr", "127.0.0.1:0"])
        .env_remove("SLUICE_API_KEYS")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice run kept waiting for the broker instead of reporting the missing keys");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("SLUICE_API_KEYS"), "{err}");
}

#[test]
fn stage_setting_rules_are_reported_at_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_pipeline(
        dir.path(),
        "name: t\nbroker: memory\ndead_letter: dlq\ntopics:\n  urls: { partitions: 1, type: crawl-url }\n  pages: { partitions: 1 }\n  dlq: { partitions: 1 }\nstages:\n  crawl:\n    kind: crawl\n    input: urls\n    output: pages\n    per_domain_concurrency: 0\n",
    );
    let out = common::sluice()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("pipeline.yaml:13:29: error: per_domain_concurrency must be at least 1"),
        "{err}"
    );
}
