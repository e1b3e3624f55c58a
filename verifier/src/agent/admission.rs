//! Kubernetes `admission.k8s.io/v1` `AdmissionReview` documents, as a
//! validating webhook sees them.
//!
//! kube-apiserver POSTs an `AdmissionReview` holding a `request`; the webhook
//! answers with an `AdmissionReview` holding a `response` whose `uid` echoes
//! the request's. [`parse`] keeps the parts of a request the webhook decides
//! on, chiefly every container image the object under review would run, and
//! [`response`] builds the answer.
//!
//! Images are found in Pods (`spec`) and in the pod templates of the
//! workload kinds (`spec.template.spec`, and
//! `spec.jobTemplate.spec.template.spec` for CronJobs), in `containers`,
//! `initContainers` and `ephemeralContainers`. Parsing is strict about the
//! JSON types on that path: a malformed pod spec is an error, never an
//! object with no images (which a webhook would allow).

use serde_json::{Map, Value};

/// Largest AdmissionReview body read (kube-apiserver caps requests at 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 3 << 20;

/// The only `apiVersion` accepted and written.
const API_VERSION: &str = "admission.k8s.io/v1";
/// The only `kind` accepted and written.
const KIND: &str = "AdmissionReview";
/// Longest warning kept by [`response`], in bytes.
const MAX_WARNING_BYTES: usize = 256;
/// Most warnings kept by [`response`].
const MAX_WARNINGS: usize = 20;
/// Longest denial message written by [`response`], in bytes.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// The body is larger than [`MAX_REVIEW_BYTES`]; holds its length.
    #[error("AdmissionReview body is {0} bytes; the limit is {MAX_REVIEW_BYTES}")]
    TooLarge(usize),
    /// The body is not JSON (or not UTF-8); holds the parser's message.
    #[error("AdmissionReview body is not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an `admission.k8s.io/v1` `AdmissionReview`
    /// request: wrong `apiVersion` or `kind`, no `request`, no `uid` or
    /// `operation`, or a request field of the wrong type.
    #[error("not an admission.k8s.io/v1 AdmissionReview request: {0}")]
    NotAdmissionReview(String),
    /// The object under review has a malformed pod spec (for example an
    /// `image` that is not a string); holds where and what.
    #[error("malformed object under review: {0}")]
    BadObject(String),
}

/// One container image referenced by the object under review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    /// Where it is, e.g. `spec.template.spec.initContainers[0]`.
    pub path: String,
    /// The container's name.
    pub container: String,
    /// The image reference as written.
    pub image: String,
}

/// The parts of a request the webhook decides on.
#[derive(Debug, Clone)]
pub struct Review {
    /// `request.uid`, to echo in the response.
    pub uid: String,
    /// The kind of the object, `request.kind.kind` (or the object's own
    /// `kind` if the request has none), e.g. `Deployment`; empty if neither
    /// is present.
    pub kind: String,
    /// `request.operation`: `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: String,
    /// `request.namespace`, if present and not empty.
    pub namespace: Option<String>,
    /// `request.name`, if present and not empty (it is empty for a CREATE
    /// that uses `generateName`).
    pub name: Option<String>,
    /// Every container image of the object under review: containers, then
    /// init containers, then ephemeral containers. Empty for kinds that hold
    /// no pod spec and for DELETE.
    pub images: Vec<ContainerImage>,
}

/// Parses a request body.
///
/// Refuses bodies over [`MAX_REVIEW_BYTES`], any `apiVersion` other than
/// `admission.k8s.io/v1`, any `kind` other than `AdmissionReview`, a
/// missing `request`, a missing or empty `request.uid`, and an `operation`
/// other than `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
///
/// The kind deciding where images are is `request.kind` (group and kind),
/// falling back to the object's `apiVersion` and `kind`. Pods (including
/// their `ephemeralcontainers` and other subresources whose object is a
/// Pod), PodTemplates, ReplicationControllers, Deployments, ReplicaSets,
/// StatefulSets, DaemonSets, Jobs and CronJobs are read; other kinds give no
/// images. On that path a missing or `null` field means "none", but a field
/// of the wrong type, a container that is not an object, a `name` that is
/// not a string, or an `image` that is missing, empty or not a string is
/// [`AdmissionError::BadObject`].
pub fn parse(body: &[u8]) -> Result<Review, AdmissionError> {
    if body.len() > MAX_REVIEW_BYTES {
        return Err(AdmissionError::TooLarge(body.len()));
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| AdmissionError::NotJson(e.to_string()))?;
    let Value::Object(doc) = doc else {
        return Err(not_review("the document is not a JSON object"));
    };
    expect_const(&doc, "apiVersion", API_VERSION)?;
    expect_const(&doc, "kind", KIND)?;
    let request = match doc.get("request") {
        Some(Value::Object(request)) => request,
        None | Some(Value::Null) => return Err(not_review("no request")),
        Some(_) => return Err(not_review("request is not an object")),
    };

    let uid = match request_str(request, "uid")? {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => return Err(not_review("request.uid is missing or empty")),
    };
    let operation = match request_str(request, "operation")? {
        Some(op @ ("CREATE" | "UPDATE" | "DELETE" | "CONNECT")) => op.to_owned(),
        Some(op) => {
            return Err(not_review(&format!(
                "request.operation {op:?} is not CREATE, UPDATE, DELETE or CONNECT"
            )));
        }
        None => return Err(not_review("request.operation is missing")),
    };
    let namespace = request_str(request, "namespace")?
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let name = request_str(request, "name")?
        .filter(|s| !s.is_empty())
        .map(str::to_owned);

    let object = match request.get("object") {
        None | Some(Value::Null) => None,
        Some(Value::Object(object)) => Some(object),
        Some(_) => return Err(not_review("request.object is not an object")),
    };
    let (group, kind) = kind_of(request, object)?;

    let images = match (object, pod_spec_path(group, kind)) {
        // Nothing is admitted to run on DELETE (and `object` is null then).
        _ if operation == "DELETE" => Vec::new(),
        (Some(object), Some(path)) => images_of(object, path)?,
        _ => Vec::new(),
    };

    Ok(Review {
        uid,
        kind: kind.to_owned(),
        operation,
        namespace,
        name,
        images,
    })
}

/// The response document: `{"apiVersion":"admission.k8s.io/v1",
/// "kind":"AdmissionReview","response":{"uid":..,"allowed":..}}`.
///
/// When `allowed` is false, `response.status` is `{"code":403,
/// "reason":"Forbidden","message":..}` (`message` only if given, cut to 4096
/// bytes); when `allowed` is true `message` is not used. `response.warnings`
/// is present only if `warnings` is not empty: each is cut to 256 bytes, and
/// only the first 20 are kept, followed by one more saying how many were
/// dropped. Cuts fall on character boundaries.
pub fn response(
    uid: &str,
    allowed: bool,
    message: Option<&str>,
    warnings: &[String],
) -> serde_json::Value {
    let mut resp = Map::new();
    resp.insert("uid".to_owned(), Value::from(uid));
    resp.insert("allowed".to_owned(), Value::Bool(allowed));
    if !allowed {
        let mut status = Map::new();
        status.insert("code".to_owned(), Value::from(403));
        status.insert("reason".to_owned(), Value::from("Forbidden"));
        if let Some(message) = message {
            status.insert(
                "message".to_owned(),
                Value::from(truncate(message, MAX_MESSAGE_BYTES)),
            );
        }
        resp.insert("status".to_owned(), Value::Object(status));
    }
    if !warnings.is_empty() {
        let mut kept: Vec<Value> = warnings
            .iter()
            .take(MAX_WARNINGS)
            .map(|w| Value::from(truncate(w, MAX_WARNING_BYTES)))
            .collect();
        let dropped = warnings.len().saturating_sub(MAX_WARNINGS);
        if dropped > 0 {
            kept.push(Value::from(format!(
                "{dropped} more warning{} not shown",
                if dropped == 1 { "" } else { "s" }
            )));
        }
        resp.insert("warnings".to_owned(), Value::Array(kept));
    }

    let mut doc = Map::new();
    doc.insert("apiVersion".to_owned(), Value::from(API_VERSION));
    doc.insert("kind".to_owned(), Value::from(KIND));
    doc.insert("response".to_owned(), Value::Object(resp));
    Value::Object(doc)
}

fn not_review(why: &str) -> AdmissionError {
    AdmissionError::NotAdmissionReview(why.to_owned())
}

fn bad_object(why: String) -> AdmissionError {
    AdmissionError::BadObject(why)
}

/// Checks that `doc[key]` is the string `want`.
fn expect_const(doc: &Map<String, Value>, key: &str, want: &str) -> Result<(), AdmissionError> {
    match doc.get(key) {
        Some(Value::String(s)) if s == want => Ok(()),
        Some(Value::String(s)) => Err(not_review(&format!("{key} is {s:?}, expected {want:?}"))),
        Some(_) => Err(not_review(&format!("{key} is not a string"))),
        None => Err(not_review(&format!("{key} is missing"))),
    }
}

/// `request[key]` as a string: `None` if missing or null, an error if some
/// other type.
fn request_str<'a>(
    request: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, AdmissionError> {
    opt_str(request, key).map_err(|()| not_review(&format!("request.{key} is not a string")))
}

/// `map[key]` as a string: `None` if missing or null, `Err` if another type.
fn opt_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ()> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

/// The API group (`None` if unknown) and kind of the object under review:
/// `request.kind`, or else the object's `apiVersion` and `kind`.
fn kind_of<'a>(
    request: &'a Map<String, Value>,
    object: Option<&'a Map<String, Value>>,
) -> Result<(Option<&'a str>, &'a str), AdmissionError> {
    match request.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::Object(gvk)) => {
            let kind = opt_str(gvk, "kind")
                .map_err(|()| not_review("request.kind.kind is not a string"))?;
            let group = opt_str(gvk, "group")
                .map_err(|()| not_review("request.kind.group is not a string"))?;
            if let Some(kind) = kind.filter(|k| !k.is_empty()) {
                return Ok((group, kind));
            }
        }
        Some(_) => return Err(not_review("request.kind is not an object")),
    }
    let Some(object) = object else {
        return Ok((None, ""));
    };
    let kind = opt_str(object, "kind")
        .map_err(|()| not_review("request.object.kind is not a string"))?
        .unwrap_or("");
    let group = opt_str(object, "apiVersion")
        .map_err(|()| not_review("request.object.apiVersion is not a string"))?
        .map(|api_version| match api_version.split_once('/') {
            Some((group, _version)) => group,
            None => "",
        });
    Ok((group, kind))
}

/// Where the pod spec is in an object of this group and kind, or `None` if
/// the kind holds none. A missing group matches any.
fn pod_spec_path(group: Option<&str>, kind: &str) -> Option<&'static [&'static str]> {
    const POD: &[&str] = &["spec"];
    const TEMPLATE: &[&str] = &["spec", "template", "spec"];
    const POD_TEMPLATE: &[&str] = &["template", "spec"];
    const CRON_JOB: &[&str] = &["spec", "jobTemplate", "spec", "template", "spec"];

    let (groups, path): (&[&str], _) = match kind {
        "Pod" => (&[""], POD),
        "PodTemplate" => (&[""], POD_TEMPLATE),
        "ReplicationController" => (&[""], TEMPLATE),
        // `extensions` served these three until Kubernetes 1.16.
        "Deployment" | "ReplicaSet" | "DaemonSet" => (&["apps", "extensions"], TEMPLATE),
        "StatefulSet" => (&["apps"], TEMPLATE),
        "Job" => (&["batch"], TEMPLATE),
        "CronJob" => (&["batch"], CRON_JOB),
        _ => return None,
    };
    match group {
        Some(group) if !groups.contains(&group) => None,
        _ => Some(path),
    }
}

/// The container lists of a pod spec, in the order images are reported.
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Every container image in the pod spec at `path` in `object`.
fn images_of(
    object: &Map<String, Value>,
    path: &[&str],
) -> Result<Vec<ContainerImage>, AdmissionError> {
    let mut here = object;
    let mut at = String::new();
    for key in path {
        if !at.is_empty() {
            at.push('.');
        }
        at.push_str(key);
        match here.get(*key) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Object(next)) => here = next,
            Some(_) => return Err(bad_object(format!("{at} is not an object"))),
        }
    }

    let mut images = Vec::new();
    for list in CONTAINER_LISTS {
        let containers = match here.get(list) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(containers)) => containers,
            Some(_) => return Err(bad_object(format!("{at}.{list} is not an array"))),
        };
        for (i, container) in containers.iter().enumerate() {
            let path = format!("{at}.{list}[{i}]");
            let Value::Object(container) = container else {
                return Err(bad_object(format!("{path} is not an object")));
            };
            let name = opt_str(container, "name")
                .map_err(|()| bad_object(format!("{path}.name is not a string")))?
                .unwrap_or("");
            let image = match container.get("image") {
                Some(Value::String(image)) if !image.is_empty() => image,
                Some(Value::String(_)) => {
                    return Err(bad_object(format!("{path}.image is empty")));
                }
                None | Some(Value::Null) => {
                    return Err(bad_object(format!("{path} has no image")));
                }
                Some(_) => return Err(bad_object(format!("{path}.image is not a string"))),
            };
            images.push(ContainerImage {
                path,
                container: name.to_owned(),
                image: image.clone(),
            });
        }
    }
    Ok(images)
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../testdata/admission/",
                $name
            ))
        };
    }

    const POD: &str = fixture!("pod.json");
    const DEPLOYMENT: &str = fixture!("deployment.json");
    const STATEFULSET: &str = fixture!("statefulset.json");
    const DAEMONSET: &str = fixture!("daemonset.json");
    const JOB: &str = fixture!("job.json");
    const CRONJOB: &str = fixture!("cronjob.json");
    const EPHEMERAL: &str = fixture!("ephemeral.json");
    const DELETE: &str = fixture!("delete.json");

    const PROXY: &str = "registry.example/proxy@sha256:\
        42e247855176b5d46d5ca738dbec5a2fc8b64af5447dbe8c5520a8db8cc6deff";

    /// (path, container, image) triples, for compact comparisons.
    fn triples(review: &Review) -> Vec<(&str, &str, &str)> {
        review
            .images
            .iter()
            .map(|i| (i.path.as_str(), i.container.as_str(), i.image.as_str()))
            .collect()
    }

    fn parse_str(s: &str) -> Result<Review, AdmissionError> {
        parse(s.as_bytes())
    }

    /// A fixture with `edit` applied to its JSON.
    fn edited(fixture: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut doc: Value = serde_json::from_str(fixture).unwrap();
        edit(&mut doc);
        serde_json::to_vec(&doc).unwrap()
    }

    fn is_bad_object(r: Result<Review, AdmissionError>) -> bool {
        matches!(r, Err(AdmissionError::BadObject(_)))
    }

    fn is_not_review(r: Result<Review, AdmissionError>) -> bool {
        matches!(r, Err(AdmissionError::NotAdmissionReview(_)))
    }

    #[test]
    fn pod_containers_then_init_containers() {
        let r = parse_str(POD).unwrap();
        assert_eq!(r.uid, "3f6c2b1e-8d4a-4c51-9a7e-0b2d5e6f7a81");
        assert_eq!(r.kind, "Pod");
        assert_eq!(r.operation, "CREATE");
        assert_eq!(r.namespace.as_deref(), Some("prod"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(
            triples(&r),
            [
                ("spec.containers[0]", "app", "registry.example/app:1.0"),
                ("spec.containers[1]", "proxy", PROXY),
                (
                    "spec.initContainers[0]",
                    "migrate",
                    "registry.example/migrate:2.3"
                ),
            ]
        );
    }

    #[test]
    fn deployment_template() {
        let r = parse_str(DEPLOYMENT).unwrap();
        assert_eq!(r.kind, "Deployment");
        assert_eq!(r.operation, "CREATE");
        assert_eq!(r.name.as_deref(), Some("api"));
        assert_eq!(
            triples(&r),
            [
                (
                    "spec.template.spec.containers[0]",
                    "api",
                    "registry.example/api:3.2.1"
                ),
                (
                    "spec.template.spec.initContainers[0]",
                    "wait-db",
                    "registry.example/tools/wait-for:1.4"
                ),
            ]
        );
    }

    #[test]
    fn statefulset_update_reads_new_object_only() {
        let r = parse_str(STATEFULSET).unwrap();
        assert_eq!(r.kind, "StatefulSet");
        assert_eq!(r.operation, "UPDATE");
        assert_eq!(
            triples(&r),
            [
                (
                    "spec.template.spec.containers[0]",
                    "postgres",
                    "registry.example/postgres:16.3"
                ),
                (
                    "spec.template.spec.containers[1]",
                    "exporter",
                    "registry.example/postgres-exporter:0.15.0"
                ),
            ]
        );
    }

    #[test]
    fn daemonset_template() {
        let r = parse_str(DAEMONSET).unwrap();
        assert_eq!(r.kind, "DaemonSet");
        assert_eq!(r.namespace.as_deref(), Some("kube-system"));
        assert_eq!(
            triples(&r),
            [(
                "spec.template.spec.containers[0]",
                "agent",
                "registry.example/marque/node-agent:0.1.0"
            )]
        );
    }

    #[test]
    fn job_template_with_sidecar() {
        let r = parse_str(JOB).unwrap();
        assert_eq!(r.kind, "Job");
        assert_eq!(r.name.as_deref(), Some("nightly-report-28971360"));
        assert_eq!(
            triples(&r),
            [
                (
                    "spec.template.spec.containers[0]",
                    "report",
                    "registry.example/reports/nightly:2025.03"
                ),
                (
                    "spec.template.spec.initContainers[0]",
                    "log-shipper",
                    "registry.example/log-shipper:1.2"
                ),
            ]
        );
    }

    #[test]
    fn cronjob_job_template() {
        let r = parse_str(CRONJOB).unwrap();
        assert_eq!(r.kind, "CronJob");
        assert_eq!(
            triples(&r),
            [(
                "spec.jobTemplate.spec.template.spec.containers[0]",
                "report",
                "registry.example/reports/nightly:2025.03"
            )]
        );
    }

    #[test]
    fn ephemeral_containers_subresource() {
        let r = parse_str(EPHEMERAL).unwrap();
        assert_eq!(r.kind, "Pod");
        assert_eq!(r.operation, "UPDATE");
        assert_eq!(
            triples(&r),
            [
                ("spec.containers[0]", "app", "registry.example/app:1.0"),
                ("spec.containers[1]", "proxy", PROXY),
                (
                    "spec.initContainers[0]",
                    "migrate",
                    "registry.example/migrate:2.3"
                ),
                (
                    "spec.ephemeralContainers[0]",
                    "debugger-x7k2p",
                    "registry.example/debug/busybox:1.36"
                ),
            ]
        );
    }

    #[test]
    fn delete_has_no_images() {
        let r = parse_str(DELETE).unwrap();
        assert_eq!(r.uid, "a0d4c8f2-6b3e-4a91-bc57-1e9f2d6a8c03");
        assert_eq!(r.kind, "Pod");
        assert_eq!(r.operation, "DELETE");
        assert_eq!(r.name.as_deref(), Some("web"));
        assert!(r.images.is_empty());
    }

    #[test]
    fn pod_template_and_replication_controller() {
        let body = edited(DEPLOYMENT, |d| {
            let req = &mut d["request"];
            let template = req["object"]["spec"]["template"].take();
            req["kind"] = json!({"group": "", "version": "v1", "kind": "PodTemplate"});
            req["object"] =
                json!({"apiVersion": "v1", "kind": "PodTemplate", "template": template});
        });
        let r = parse(&body).unwrap();
        assert_eq!(r.images.len(), 2);
        assert_eq!(r.images[0].path, "template.spec.containers[0]");
        assert_eq!(r.images[1].path, "template.spec.initContainers[0]");

        let body = edited(DEPLOYMENT, |d| {
            d["request"]["kind"] =
                json!({"group": "", "version": "v1", "kind": "ReplicationController"});
        });
        let r = parse(&body).unwrap();
        assert_eq!(r.images[0].path, "spec.template.spec.containers[0]");

        let body = edited(DEPLOYMENT, |d| {
            d["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "ReplicaSet"});
        });
        assert_eq!(parse(&body).unwrap().images.len(), 2);
    }

    #[test]
    fn kind_falls_back_to_object() {
        let body = edited(DEPLOYMENT, |d| {
            d["request"].as_object_mut().unwrap().remove("kind");
        });
        let r = parse(&body).unwrap();
        assert_eq!(r.kind, "Deployment");
        assert_eq!(r.images.len(), 2);
    }

    #[test]
    fn unknown_kinds_and_other_groups_have_no_images() {
        let body = edited(DEPLOYMENT, |d| {
            d["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
        });
        let r = parse(&body).unwrap();
        assert_eq!(r.kind, "ConfigMap");
        assert!(r.images.is_empty());

        // A custom resource that happens to be called Deployment.
        let body = edited(DEPLOYMENT, |d| {
            d["request"]["kind"] =
                json!({"group": "example.com", "version": "v1", "kind": "Deployment"});
            d["request"]["object"]["spec"]["template"] = json!("not a pod template");
        });
        assert!(parse(&body).unwrap().images.is_empty());
    }

    #[test]
    fn missing_container_lists_are_fine() {
        let body = edited(POD, |d| {
            let spec = d["request"]["object"]["spec"].as_object_mut().unwrap();
            spec.remove("containers");
            spec.insert("initContainers".to_owned(), Value::Null);
        });
        assert!(parse(&body).unwrap().images.is_empty());
    }

    #[test]
    fn bad_api_version_or_kind_refused() {
        let body = edited(POD, |d| d["apiVersion"] = json!("admission.k8s.io/v1beta1"));
        assert!(is_not_review(parse(&body)));
        let body = edited(POD, |d| {
            d.as_object_mut().unwrap().remove("apiVersion");
        });
        assert!(is_not_review(parse(&body)));
        let body = edited(POD, |d| d["kind"] = json!("AdmissionRequest"));
        assert!(is_not_review(parse(&body)));
        let body = edited(POD, |d| {
            d.as_object_mut().unwrap().remove("request");
        });
        assert!(is_not_review(parse(&body)));
        assert!(is_not_review(parse_str("[1, 2]")));
    }

    #[test]
    fn missing_or_empty_uid_refused() {
        let body = edited(POD, |d| {
            d["request"].as_object_mut().unwrap().remove("uid");
        });
        assert!(is_not_review(parse(&body)));
        let body = edited(POD, |d| d["request"]["uid"] = json!(""));
        assert!(is_not_review(parse(&body)));
        let body = edited(POD, |d| d["request"]["uid"] = json!(7));
        assert!(is_not_review(parse(&body)));
    }

    #[test]
    fn bad_operation_refused() {
        let body = edited(POD, |d| d["request"]["operation"] = json!("PATCH"));
        assert!(is_not_review(parse(&body)));
        let body = edited(POD, |d| {
            d["request"].as_object_mut().unwrap().remove("operation");
        });
        assert!(is_not_review(parse(&body)));
    }

    #[test]
    fn non_string_image_refused() {
        let body = edited(POD, |d| {
            d["request"]["object"]["spec"]["initContainers"][0]["image"] = json!(["a", "b"]);
        });
        let err = parse(&body).unwrap_err();
        assert_eq!(
            err,
            AdmissionError::BadObject("spec.initContainers[0].image is not a string".to_owned())
        );

        let body = edited(DEPLOYMENT, |d| {
            d["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
                json!(42);
        });
        assert!(is_bad_object(parse(&body)));
    }

    #[test]
    fn missing_or_empty_image_refused() {
        let body = edited(CRONJOB, |d| {
            d["request"]["object"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
                [0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        });
        let err = parse(&body).unwrap_err();
        assert_eq!(
            err,
            AdmissionError::BadObject(
                "spec.jobTemplate.spec.template.spec.containers[0] has no image".to_owned()
            )
        );
        let body = edited(POD, |d| {
            d["request"]["object"]["spec"]["containers"][1]["image"] = json!("");
        });
        assert!(is_bad_object(parse(&body)));
    }

    #[test]
    fn wrong_types_on_the_pod_spec_path_refused() {
        let cases: [fn(&mut Value); 5] = [
            |d| d["request"]["object"]["spec"]["containers"] = json!({"app": {}}),
            |d| d["request"]["object"]["spec"]["containers"][0] = json!("app"),
            |d| d["request"]["object"]["spec"]["containers"][0]["name"] = json!(1),
            |d| d["request"]["object"]["spec"] = json!([]),
            |d| d["request"]["object"] = json!("pod"),
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let r = parse(&edited(POD, case));
            assert!(
                matches!(
                    r,
                    Err(AdmissionError::BadObject(_) | AdmissionError::NotAdmissionReview(_))
                ),
                "case {i}: {r:?}"
            );
        }
    }

    #[test]
    fn not_json_and_too_large_refused() {
        assert!(matches!(
            parse(b"{\"apiVersion\":"),
            Err(AdmissionError::NotJson(_))
        ));
        assert!(matches!(
            parse(b"\xff\xfe"),
            Err(AdmissionError::NotJson(_))
        ));
        let big = vec![b' '; MAX_REVIEW_BYTES + 1];
        assert_eq!(
            parse(&big).unwrap_err(),
            AdmissionError::TooLarge(MAX_REVIEW_BYTES + 1)
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut body = "[".repeat(100_000);
        body.push_str(&"]".repeat(100_000));
        assert!(matches!(
            parse(body.as_bytes()),
            Err(AdmissionError::NotJson(_))
        ));
    }

    #[test]
    fn response_allow() {
        let doc = response("u-1", true, Some("ignored when allowed"), &[]);
        assert_eq!(
            doc,
            json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": "u-1", "allowed": true}
            })
        );
    }

    #[test]
    fn response_deny() {
        let doc = response("u-2", false, Some("image x is not signed"), &[]);
        assert_eq!(
            doc,
            json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": "u-2",
                    "allowed": false,
                    "status": {"code": 403, "reason": "Forbidden", "message": "image x is not signed"}
                }
            })
        );
        let doc = response("u-3", false, None, &[]);
        assert_eq!(
            doc["response"]["status"],
            json!({"code": 403, "reason": "Forbidden"})
        );
    }

    #[test]
    fn response_warnings() {
        let warnings = vec!["image a:1 referenced by tag".to_owned(), String::new()];
        let doc = response("u-4", true, None, &warnings);
        assert_eq!(
            doc["response"],
            json!({"uid": "u-4", "allowed": true, "warnings": ["image a:1 referenced by tag", ""]})
        );
    }

    #[test]
    fn response_truncation() {
        // 'é' is two bytes, so after the leading 'x' byte 256 is mid-character.
        let long = format!("x{}", "é".repeat(150));
        let doc = response(
            "u-5",
            false,
            Some(&"m".repeat(5000)),
            std::slice::from_ref(&long),
        );
        let message = doc["response"]["status"]["message"].as_str().unwrap();
        assert_eq!(message.len(), 4096);
        let w = doc["response"]["warnings"][0].as_str().unwrap();
        assert_eq!(w.len(), 255);
        assert!(long.starts_with(w));

        let message = format!("{}€", "m".repeat(4094));
        let doc = response("u-6", false, Some(&message), &[]);
        assert_eq!(
            doc["response"]["status"]["message"].as_str().unwrap(),
            "m".repeat(4094)
        );

        let many: Vec<String> = (0..25).map(|i| format!("w{i}")).collect();
        let doc = response("u-7", true, None, &many);
        let got = doc["response"]["warnings"].as_array().unwrap();
        assert_eq!(got.len(), 21);
        assert_eq!(got[0], "w0");
        assert_eq!(got[19], "w19");
        assert_eq!(got[20], "5 more warnings not shown");

        let exactly: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
        let doc = response("u-8", true, None, &exactly);
        assert_eq!(doc["response"]["warnings"].as_array().unwrap().len(), 20);
    }

    #[test]
    fn fixture_images_are_plain_strings() {
        // The end-to-end test rewrites `image` fields; every one must be a
        // plain string in a container object.
        for fixture in [
            POD,
            DEPLOYMENT,
            STATEFULSET,
            DAEMONSET,
            JOB,
            CRONJOB,
            EPHEMERAL,
        ] {
            let r = parse_str(fixture).unwrap();
            assert!(!r.images.is_empty());
            assert!(r.images.iter().all(|i| !i.image.is_empty()));
        }
    }
}
