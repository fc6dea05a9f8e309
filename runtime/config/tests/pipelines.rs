//! Valid pipelines: values, interpolation, overrides, ports, graphs.

mod common;

use std::time::Duration;

use common::{catalog, env_from};
use sluice_config::{
    from_node, graph, load, load_str, load_str_validated, load_validated, validate, Broker,
    Endpoint, HumanDuration, Node, Origin,
};

fn example() -> String {
    std::fs::read_to_string(manifest_dir().join("tests/ok/web-crawl.yaml")).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn example_validates_cleanly_with_a_declared_feedback_cycle() {
    let (p, warnings) =
        load_str_validated(&example(), "pipeline.yaml", &[], &no_env, &catalog()).unwrap();
    assert!(warnings.is_empty(), "{warnings}");
    assert_eq!(p.name, "web-crawl");
    assert_eq!(p.broker.value, Broker::Memory);
    assert_eq!(p.broker.pos.to_string(), "pipeline.yaml:2:9");
    assert_eq!(p.services.memcached.value, Endpoint::Memory);
    assert_eq!(p.services.etcd.value, Endpoint::Memory);
    assert!(
        p.services.chroma.is_none(),
        "empty chroma means not configured"
    );
    assert_eq!(p.services.storage.value, "./data");
    assert_eq!(p.dead_letter.as_ref().unwrap().value, "dead-letter");

    let topics: Vec<(&str, u32, i16)> = p
        .topics
        .values()
        .map(|t| (t.name.as_str(), t.partitions, t.replication))
        .collect();
    assert_eq!(
        topics,
        [
            ("url-in", 8, 1),
            ("urls", 8, 1),
            ("pages", 4, 3),
            ("dead-letter", 1, 1)
        ]
    );

    let crawl = &p.stages["crawl"];
    assert_eq!(crawl.kind.value, "crawl");
    assert_eq!(crawl.input.as_ref().unwrap().value, "urls");
    let outputs: Vec<(&str, &str)> = crawl
        .outputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(outputs, [("output", "pages"), ("discovered", "url-in")]);
    assert_eq!(
        crawl.outputs["discovered"].pos.to_string(),
        "pipeline.yaml:31:17"
    );
    assert_eq!(crawl.replicas, 1);
    assert_eq!(crawl.concurrency, Some(16));
    assert_eq!(crawl.retry.attempts, 3);
    assert_eq!(crawl.retry.backoff, Duration::from_millis(500));
    assert_eq!(crawl.retry.max_backoff, Duration::from_secs(30));
    assert_eq!(crawl.feedback[0].value, "url-in");
    assert_eq!(
        crawl.resources.as_ref().unwrap().to_yaml_value()["memory"].as_str(),
        Some("256Mi")
    );
    assert_eq!(
        crawl.autoscale.as_ref().unwrap().to_yaml_value()["max"].as_i64(),
        Some(8)
    );
    // Only kind-specific settings remain, with their positions.
    let keys: Vec<&str> = crawl
        .settings
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.key_text())
        .collect();
    assert_eq!(keys, ["timeout"]);
    assert_eq!(
        crawl.settings.get("timeout").unwrap().pos.to_string(),
        "pipeline.yaml:37:14"
    );

    let normalize = &p.stages["normalize"];
    assert_eq!(normalize.replicas, 2);
    let settings: common::NormalizeSettings = from_node(&normalize.settings).unwrap();
    assert_eq!(
        settings.recrawl_after,
        Some(HumanDuration(Duration::from_secs(24 * 3600)))
    );
    assert_eq!(p.stages["store"].replicas, 0);
    assert_eq!(p.stages["ingest"].retry.attempts, 5);
}

#[test]
fn removing_the_feedback_declaration_makes_the_cycle_an_error() {
    let text = example().replace("    feedback: [url-in]\n", "");
    let errors = load_str_validated(&text, "pipeline.yaml", &[], &no_env, &catalog()).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "pipeline.yaml:31:17: error: cycle without a `feedback` edge: normalize -> urls -> crawl -> url-in -> normalize; \
         if the loop is intended, add `feedback: [url-in]` to stage `crawl`"
    );
}

#[test]
fn validate_works_before_ports_are_bound() {
    let p = load_str(&example(), "pipeline.yaml", &[], &no_env).unwrap();
    assert!(!p.stages["crawl"].outputs.contains_key("discovered"));
    assert!(validate(&p, &catalog()).is_empty());
}

#[test]
fn environment_values_are_typed_by_their_result() {
    let env = env_from(&[
        ("SLUICE_BROKER", "kafka://k1:9092,k2:9092"),
        ("URL_IN_PARTITIONS", "3"),
        ("URLS_PARTITIONS", "12"),
        ("SLUICE_MEMCACHED", "127.0.0.1:11211,127.0.0.2:11211"),
        ("SLUICE_ETCD", "http://etcd:2379"),
        ("SLUICE_CHROMA", "http://chroma:8000"),
        ("SLUICE_STORAGE", "s3://bucket/crawl"),
    ]);
    let p = load_str(&example(), "pipeline.yaml", &[], &env).unwrap();
    assert_eq!(
        p.broker.value,
        Broker::Kafka {
            bootstrap: "k1:9092,k2:9092".into()
        }
    );
    // Flow maps force quoting; a whole substitution is still typed.
    assert_eq!(p.topics["url-in"].partitions, 3);
    assert_eq!(p.topics["urls"].partitions, 12);
    assert_eq!(
        p.services.memcached.value,
        Endpoint::Remote(vec!["127.0.0.1:11211".into(), "127.0.0.2:11211".into()])
    );
    assert_eq!(
        p.services.etcd.value,
        Endpoint::Remote(vec!["http://etcd:2379".into()])
    );
    assert_eq!(
        p.services.chroma.as_ref().unwrap().value,
        "http://chroma:8000"
    );
    assert_eq!(p.services.storage.value, "s3://bucket/crawl");
    assert_eq!(
        p.source.to_yaml_value()["topics"]["urls"]["partitions"].as_i64(),
        Some(12)
    );
}

#[test]
fn default_typing_of_unquoted_substitutions() {
    let text = "name: x\ntopics:\n  t:\n    partitions: ${P:-8}\n    replication: ${R:-2}\n";
    let p = load_str(text, "p.yaml", &[], &no_env).unwrap();
    assert_eq!(
        (p.topics["t"].partitions, p.topics["t"].replication),
        (8, 2)
    );
    let p = load_str(text, "p.yaml", &[], &env_from(&[("P", "5")])).unwrap();
    assert_eq!(p.topics["t"].partitions, 5);
    let e = load_str(text, "p.yaml", &[], &env_from(&[("P", "five")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "p.yaml:4:17: error: invalid type: string \"five\", expected u32"
    );
}

#[test]
fn set_overrides_win_and_are_positioned_as_set() {
    let sets = vec![
        "stages.crawl.replicas=3".to_string(),
        "services.memcached=127.0.0.1:11211".to_string(),
        "topics.urls.partitions=4".to_string(),
        "topics.extra={partitions: 2, type: Page}".to_string(),
        "broker=memory".to_string(),
    ];
    // The file's broker needs a variable that is unset; the override makes
    // that moot.
    let text = example().replace("${SLUICE_BROKER:-memory}", "${SLUICE_BROKER}");
    let (p, warnings) =
        load_str_validated(&text, "pipeline.yaml", &sets, &no_env, &catalog()).unwrap();
    assert_eq!(p.stages["crawl"].replicas, 3);
    assert_eq!(p.topics["urls"].partitions, 4);
    assert_eq!(p.topics["extra"].partitions, 2);
    assert_eq!(
        p.services.memcached.value,
        Endpoint::Remote(vec!["127.0.0.1:11211".into()])
    );
    assert_eq!(
        p.services.memcached.pos.origin,
        Origin::Set("services.memcached=127.0.0.1:11211".into())
    );
    assert_eq!(p.broker.value, Broker::Memory);
    assert_eq!(
        warnings.to_string(),
        "--set topics.extra={partitions: 2, type: Page}: warning: topic `extra` has no consumer: no stage reads it"
    );
    let node = p.source.get_path(&["stages", "crawl", "replicas"]).unwrap();
    assert_eq!(node.pos.to_string(), "--set stages.crawl.replicas=3");

    let later = vec![
        "stages.crawl.replicas=3".to_string(),
        "stages.crawl.replicas=5".to_string(),
    ];
    let p = load_str(&example(), "pipeline.yaml", &later, &no_env).unwrap();
    assert_eq!(p.stages["crawl"].replicas, 5);
}

#[test]
fn set_values_are_literal() {
    let sets = vec!["name=$${HOME}".to_string()];
    let p = load_str("name: x\n", "p.yaml", &sets, &no_env).unwrap();
    assert_eq!(p.name, "$${HOME}");
}

#[test]
fn anchors_and_aliases_are_expanded() {
    let text = "name: x\ntopics:\n  a: &big {partitions: 16}\n  b: *big\n";
    let p = load_str(text, "p.yaml", &[], &no_env).unwrap();
    assert_eq!(p.topics["b"].partitions, 16);
    assert_eq!(
        p.source.get_path(&["topics", "b"]).unwrap().pos.to_string(),
        "p.yaml:4:6"
    );
}

#[test]
fn extension_fields_hold_shared_anchors() {
    let text = "name: x\nx-defaults: &crawl {kind: crawl, replicas: 3, timeout: 5s}\n\
                topics:\n  urls: {type: Url}\n  pages: {}\n\
                stages:\n  a:\n    <<: *crawl\n    input: urls\n    output: pages\n    replicas: 1\n  \
                store: {kind: sink, input: pages}\n";
    let (p, warnings) = load_str_validated(text, "p.yaml", &[], &no_env, &catalog()).unwrap();
    assert!(warnings.is_empty(), "{warnings}");
    let a = &p.stages["a"];
    assert_eq!((a.kind.value.as_str(), a.replicas), ("crawl", 1));
    assert_eq!(
        a.settings.get("timeout").unwrap().pos.to_string(),
        "p.yaml:2:56"
    );
    let e = load_str("name: x\ny-other: 1\n", "p.yaml", &[], &no_env).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("p.yaml:2:1: error: unknown field `y-other`"),
        "{e}"
    );
}

#[test]
fn load_from_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, example()).unwrap();
    let (p, _) = load_validated(&path, &[], &no_env, &catalog()).unwrap();
    assert_eq!(p.path, path);
    assert_eq!(p.name, "web-crawl");

    std::fs::write(&path, "name: x\ntopics:\n  t: {partitons: 1}\n").unwrap();
    let e = load(&path, &[], &no_env).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3:7: error: unknown field `partitons`, expected one of `partitions`, `replication`, `type`, `max_message_bytes`",
            path.display()
        )
    );

    let missing = dir.path().join("nope.yaml");
    let e = load(&missing, &[], &no_env).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1:1: error: cannot read", missing.display())),
        "{e}"
    );
}

#[test]
fn source_round_trips_through_yaml_text() {
    let env = env_from(&[("URLS_PARTITIONS", "12")]);
    let p = load_str(&example(), "pipeline.yaml", &[], &env).unwrap();
    let text = p.to_yaml();
    assert!(text.contains("partitions: 12"), "{text}");
    assert!(!text.contains("${"), "interpolated: {text}");
    let reparsed = Node::parse(&text, &"roundtrip.yaml".into()).unwrap();
    assert_eq!(reparsed.to_yaml_value(), p.source.to_yaml_value());
    // Strings that look like other types keep their quotes.
    let p = load_str("name: 'true'\ntopics: {}\n", "p.yaml", &[], &no_env).unwrap();
    assert_eq!(p.to_yaml(), "name: \"true\"\ntopics: {}\n");
}

#[test]
fn graphs_are_deterministic() {
    let (p, _) = load_str_validated(&example(), "pipeline.yaml", &[], &no_env, &catalog()).unwrap();
    let dot = graph::to_dot(&p);
    assert_eq!(
        dot,
        r#"digraph "web-crawl" {
  rankdir=LR;
  node [fontname="Helvetica"];
  edge [fontname="Helvetica"];
  "topic:url-in" [shape=ellipse, label="url-in\n8 partitions"];
  "topic:urls" [shape=ellipse, label="urls\n8 partitions"];
  "topic:pages" [shape=ellipse, label="pages\n4 partitions"];
  "topic:dead-letter" [shape=ellipse, label="dead-letter\n1 partition\ndead letter"];
  "stage:ingest" [shape=box, label="ingest\nkind: http-source"];
  "stage:normalize" [shape=box, label="normalize\nkind: normalize-dedup\nreplicas: 2"];
  "stage:crawl" [shape=box, label="crawl\nkind: crawl"];
  "stage:store" [shape=box, label="store\nkind: sink\nreplicas: 0"];
  "stage:ingest" -> "topic:url-in";
  "topic:url-in" -> "stage:normalize";
  "stage:normalize" -> "topic:urls";
  "topic:urls" -> "stage:crawl";
  "stage:crawl" -> "topic:pages";
  "stage:crawl" -> "topic:url-in" [label="discovered", style=dashed];
  "topic:pages" -> "stage:store";
}
"#
    );
    let mermaid = graph::to_mermaid(&p);
    assert_eq!(
        mermaid,
        r#"flowchart LR
  t0(["url-in<br/>8 partitions"])
  t1(["urls<br/>8 partitions"])
  t2(["pages<br/>4 partitions"])
  t3(["dead-letter<br/>1 partition<br/>dead letter"])
  s0["ingest<br/>kind: http-source"]
  s1["normalize<br/>kind: normalize-dedup<br/>replicas: 2"]
  s2["crawl<br/>kind: crawl"]
  s3["store<br/>kind: sink<br/>replicas: 0"]
  s0 --> t0
  t0 --> s1
  s1 --> t1
  t1 --> s2
  s2 --> t2
  s2 -.->|discovered| t0
  t2 --> s3
"#
    );
    assert_eq!(graph::to_dot(&p), dot, "same input, same output");
}

/// This package's directory: as cargo gives it to the running test, else as it was when this
/// was built (a binary reused from a shared target directory may come from another clone).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
