//! Events about SendingDomains, written one `events.k8s.io/v1` object each.
//!
//! kube's `Recorder` keeps every Event it wrote for six minutes, to count
//! repeats of one into a series, and scans all of them on every write. An Event
//! here names the object's resourceVersion, which changes with every status
//! write, so none is ever a repeat: during a bulk apply that cache only grew
//! (about 3 KB per Event, 5.9 MB of the heap's peak with 2,000 new domains) and
//! every write paid a scan of it.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Writes Events as one controller instance.
#[derive(Clone)]
pub struct EventWriter {
    client: Client,
    controller: String,
    instance: String,
}

/// What an Event says.
pub struct Note<'a> {
    pub warning: bool,
    pub reason: &'a str,
    pub action: &'a str,
    pub message: &'a str,
}

impl EventWriter {
    /// Events reported by `controller`, from `instance` (the pod; the
    /// controller's name when unknown).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> EventWriter {
        EventWriter {
            client,
            controller: controller.into(),
            instance: instance.unwrap_or_else(|| controller.into()),
        }
    }

    /// Creates an Event about `regarding`, in its namespace.
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        note: &Note<'_>,
    ) -> Result<(), kube::Error> {
        let event = build(
            &self.controller,
            &self.instance,
            regarding,
            note,
            Timestamp::now(),
        );
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

/// The Event `controller` (as `instance`) writes about `regarding` at `now`.
fn build(
    controller: &str,
    instance: &str,
    regarding: ObjectReference,
    note: &Note<'_>,
    now: Timestamp,
) -> Event {
    let namespace = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    // Unique per object and instant, as `kubectl` and client-go name theirs.
    let name = format!(
        "{}.{:x}",
        regarding.name.as_deref().unwrap_or(controller),
        now.as_nanosecond()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        action: Some(note.action.into()),
        reason: Some(note.reason.into()),
        note: Some(note.message.into()),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding),
        reporting_controller: Some(controller.into()),
        reporting_instance: Some(instance.into()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_reporter_and_kind_in_the_objects_namespace() {
        let regarding = ObjectReference {
            kind: Some("SendingDomain".into()),
            name: Some("example-com".into()),
            namespace: Some("team-a".into()),
            resource_version: Some("42".into()),
            ..ObjectReference::default()
        };
        let note = Note {
            warning: true,
            reason: "VerificationFailed",
            action: "Reconcile",
            message: "the CNAME is missing",
        };
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let e = build("anypost-operator", "pod-1", regarding.clone(), &note, now);
        assert_eq!(e.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            e.metadata.name,
            Some(format!("example-com.{:x}", now.as_nanosecond()))
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("VerificationFailed"));
        assert_eq!(e.note.as_deref(), Some("the CNAME is missing"));
        assert_eq!(e.regarding, Some(regarding));
        assert_eq!(e.reporting_controller.as_deref(), Some("anypost-operator"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(e.event_time, Some(MicroTime(now)));
        let normal = Note {
            warning: false,
            ..note
        };
        let e = build("c", "c", ObjectReference::default(), &normal, now);
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    }
}
