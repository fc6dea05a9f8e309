//! `sluice k8s render`: the shipped pipeline.yaml renders to the expected objects,
//! deterministically; changing one stage's replicas changes exactly that Deployment; autoscale
//! becomes a KEDA ScaledObject; a broken pipeline fails with the same positioned errors as
//! `sluice validate`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

fn render(file: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = common::sluice()
        .args(["k8s", "render", "-f"])
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Objects by `kind/name`.
fn objects(stream: &str) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for v in common::yaml::documents(stream) {
        let key = format!(
            "{}/{}",
            v["kind"].as_str().unwrap(),
            v["metadata"]["name"].as_str().unwrap()
        );
        m.insert(key, v);
    }
    m
}

fn shipped() -> std::path::PathBuf {
    common::manifest_dir().join("pipeline.yaml")
}

#[test]
fn the_shipped_pipeline_renders_every_stage_deterministically() {
    let (ok, a, err) = render(
        &shipped(),
        &["--image", "example/sluice:1", "--namespace", "crawl"],
    );
    assert!(ok, "{err}");
    let (_, b, _) = render(
        &shipped(),
        &["--image", "example/sluice:1", "--namespace", "crawl"],
    );
    assert_eq!(a, b, "deterministic");
    let o = objects(&a);
    for stage in [
        "ingest",
        "normalize",
        "crawl",
        "parquet-batch",
        "anchors",
        "embeddings",
    ] {
        let d = &o[&format!("Deployment/web-crawl-{stage}")];
        assert_eq!(d["metadata"]["namespace"], "crawl");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "example/sluice:1");
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            &args[..5],
            &["run", "-f", "/etc/sluice/pipeline.yaml", "--stage", stage]
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
            "true"
        );
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/component"],
            stage
        );
        let grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap();
        assert!(grace >= 45, "{stage}: grace {grace}s must cover the drain");
    }
    assert_eq!(o["Deployment/web-crawl-crawl"]["spec"]["replicas"], 2);
    assert!(
        o.contains_key("PodDisruptionBudget/web-crawl-crawl"),
        "2 replicas get a PDB"
    );
    assert!(
        !o.contains_key("PodDisruptionBudget/web-crawl-ingest"),
        "1 replica: no PDB"
    );
    assert_eq!(
        o["Service/web-crawl-ingest"]["spec"]["ports"][0]["targetPort"],
        "http"
    );
    assert!(o.contains_key("Job/web-crawl-topics-create"));
    let cm = &o["ConfigMap/web-crawl-pipeline"];
    assert_eq!(
        cm["data"]["pipeline.yaml"].as_str().unwrap(),
        std::fs::read_to_string(shipped()).unwrap()
    );
}

#[test]
fn changing_one_stages_replicas_changes_exactly_that_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shipped()).unwrap();
    let before = dir.path().join("before.yaml");
    std::fs::write(&before, &text).unwrap();
    // The crawl stage's `replicas: 2` is the first one after `kind: crawl`.
    let at = text.find("kind: crawl").unwrap();
    let rel = text[at..].find("replicas: 2").unwrap();
    let changed = format!(
        "{}replicas: 5{}",
        &text[..at + rel],
        &text[at + rel + "replicas: 2".len()..]
    );
    let after = dir.path().join("after.yaml");
    std::fs::write(&after, changed).unwrap();
    let (ok_a, a, e) = render(&before, &[]);
    assert!(ok_a, "{e}");
    let (ok_b, b, e) = render(&after, &[]);
    assert!(ok_b, "{e}");
    let (a, b) = (objects(&a), objects(&b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let differing: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert_eq!(
        differing,
        vec!["ConfigMap/web-crawl-pipeline", "Deployment/web-crawl-crawl"],
        "only the crawl Deployment (and the ConfigMap holding the file) change"
    );
    assert_eq!(b["Deployment/web-crawl-crawl"]["spec"]["replicas"], 5);
}

#[test]
fn autoscale_becomes_a_keda_scaled_object_on_consumer_lag() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: scale
broker: kafka-0.kafka:9092,kafka-1.kafka:9092
dead_letter: dlq
topics:
  url-in: { partitions: 8 }
  urls: { partitions: 8 }
  dlq: { partitions: 1 }
stages:
  normalize:
    kind: normalize-dedup
    input: url-in
    output: urls
    replicas: 2
    autoscale: { min: 1, max: 8, lag: 5000 }
"#;
    let file = common::write_pipeline(dir.path(), yaml);
    let (ok, out, err) = render(&file, &[]);
    assert!(ok, "{err}");
    let o = objects(&out);
    let so = &o["ScaledObject/scale-normalize"];
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], "scale-normalize");
    assert_eq!(so["spec"]["minReplicaCount"], 1);
    assert_eq!(so["spec"]["maxReplicaCount"], 8);
    let t = &so["spec"]["triggers"][0];
    assert_eq!(t["type"], "kafka");
    assert_eq!(t["metadata"]["consumerGroup"], "normalize");
    assert_eq!(t["metadata"]["topic"], "url-in");
    assert_eq!(t["metadata"]["lagThreshold"], "5000");
    assert_eq!(
        t["metadata"]["bootstrapServers"],
        "kafka-0.kafka:9092,kafka-1.kafka:9092"
    );

    // On the embedded bus there is no lag to scale on: a positioned error.
    let file = common::write_pipeline(
        dir.path(),
        &yaml.replace("kafka-0.kafka:9092,kafka-1.kafka:9092", "memory"),
    );
    let (ok, _, err) = render(&file, &[]);
    assert!(!ok);
    assert!(err.contains("pipeline.yaml:14:16: error:"), "{err}");
    assert!(err.contains("autoscale"), "{err}");
}

#[test]
fn a_broken_pipeline_fails_with_the_same_positioned_errors_as_validate() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_pipeline(
        dir.path(),
        "name: broken\nbroker: memory\ntopics:\n  a: { partitions: 0 }\nstages:\n  s:\n    kind: no-such-kind\n    input: a\n",
    );
    let (ok, out, render_err) = render(&file, &[]);
    assert!(!ok);
    assert!(out.is_empty(), "nothing rendered: {out}");
    let validate = common::sluice()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!validate.status.success());
    let validate_err = String::from_utf8(validate.stderr).unwrap();
    let positioned = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains("pipeline.yaml:"))
            .map(str::to_string)
            .collect()
    };
    assert!(!positioned(&validate_err).is_empty(), "{validate_err}");
    assert_eq!(positioned(&render_err), positioned(&validate_err));
}

#[test]
fn the_committed_base_is_rendered_from_the_current_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sluice");
    let status = common::sluice()
        .current_dir(common::manifest_dir())
        .args(["k8s", "render", "-f", "pipeline.yaml", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let committed = common::manifest_dir().join("k8s/base/sluice");
    // Every file, subdirectories (strimzi-topics/) included, by path relative to the root.
    fn files(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                files(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let names = |d: &Path| -> Vec<String> {
        let mut v = Vec::new();
        files(d, d, &mut v);
        v.sort();
        v
    };
    assert_eq!(
        names(&out),
        names(&committed),
        "re-run: sluice k8s render -o k8s/base/sluice"
    );
    assert!(names(&out).contains(&"strimzi-topics/kustomization.yaml".to_string()));
    for name in names(&out) {
        assert_eq!(
            std::fs::read_to_string(out.join(&name)).unwrap(),
            std::fs::read_to_string(committed.join(&name)).unwrap(),
            "k8s/base/sluice/{name} is stale: re-run `sluice k8s render -o k8s/base/sluice`"
        );
    }
}

#[test]
fn strings_yaml_would_misread_are_quoted() {
    // Values a YAML 1.1 or 1.2 reader would take for a bool, a number or a date, written plain.
    let (ok, out, err) = render(
        &shipped(),
        &[
            "--image",
            "0o17",
            "--namespace",
            "on",
            "--ingress-host",
            "2024-01-01",
        ],
    );
    assert!(ok, "{err}");
    for quoted in [
        "image: \"0o17\"",
        "namespace: \"on\"",
        "host: \"2024-01-01\"",
        "prometheus.io/scrape: \"true\"",
        "prometheus.io/port: \"9400\"",
    ] {
        assert!(out.contains(quoted), "no `{quoted}` in:\n{out}");
    }
    let o = objects(&out);
    let d = &o["Deployment/web-crawl-ingest"];
    assert_eq!(d["metadata"]["namespace"], "on");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "0o17"
    );
    assert_eq!(
        o["Ingress/web-crawl-ingest"]["spec"]["rules"][0]["host"],
        "2024-01-01"
    );
}

#[test]
fn ports_come_from_what_each_kind_declares() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: ports
broker: memory
dead_letter: dlq
topics:
  url-in: { partitions: 2 }
  urls: { partitions: 2 }
  dlq: { partitions: 1 }
stages:
  api:
    kind: ingest
    output: url-in
    listen: 127.0.0.1:9090
  normalize:
    kind: normalize-dedup
    input: url-in
    output: urls
"#;
    let file = common::write_pipeline(dir.path(), yaml);
    let (ok, out, err) = render(&file, &["--ingress-host", "crawl.example.org"]);
    assert!(ok, "{err}");
    let o = objects(&out);
    let ports = |stage: &str| -> Vec<(String, u64)> {
        o[&format!("Deployment/ports-{stage}")]["spec"]["template"]["spec"]["containers"][0]
            ["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // ingest declares its `listen` port (exposed, with an Ingress path); normalize declares none.
    assert_eq!(
        ports("api"),
        [("metrics".to_string(), 9400), ("http".to_string(), 9090)]
    );
    assert_eq!(ports("normalize"), [("metrics".to_string(), 9400)]);
    let svc = &o["Service/ports-api"];
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    let path = &o["Ingress/ports-api"]["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["path"], "/v1/urls");
    assert_eq!(path["backend"]["service"]["name"], "ports-api");
    assert!(!o.contains_key("Service/ports-normalize"));
    assert!(!o.contains_key("Ingress/ports-normalize"));
    // The kind's default resources, where the stage sets none.
    let resources =
        &o["Deployment/ports-normalize"]["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["cpu"], "100m");
    assert_eq!(resources["limits"]["memory"], "512Mi");

    // Without `listen`, the port of ingest's own default address.
    let file = common::write_pipeline(
        dir.path(),
        &yaml.replace("    listen: 127.0.0.1:9090\n", ""),
    );
    let (ok, out, err) = render(&file, &[]);
    assert!(ok, "{err}");
    let o = objects(&out);
    let c = &o["Deployment/ports-api"]["spec"]["template"]["spec"]["containers"][0];
    let default_port: u64 = sluice_stage_ingest::DEFAULT_LISTEN
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert_eq!(c["ports"][1]["containerPort"], default_port);

    // An address without a port is an error at `listen`, not a silently wrong port.
    let file = common::write_pipeline(dir.path(), &yaml.replace("127.0.0.1:9090", "localhost"));
    let (ok, _, err) = render(&file, &[]);
    assert!(!ok);
    assert!(err.contains("pipeline.yaml:12:13: error:"), "{err}");
    assert!(err.contains("`listen`"), "{err}");
}
