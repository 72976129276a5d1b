//! The workload a pod belongs to, resolved from its controller reference and names alone.
//!
//! A pod's controller is a ReplicaSet, StatefulSet, DaemonSet or Job; users think in
//! Deployments and CronJobs. Reading the intermediate objects would need RBAC on ReplicaSets
//! and Jobs and a cluster-wide watch of each on every node (they cannot be selected by node),
//! for information the names already carry:
//! - the Deployment controller names its ReplicaSets `<deployment>-<pod-template-hash>` and puts
//!   the same hash on their pods as the `pod-template-hash` label, so a ReplicaSet whose name is
//!   `<prefix>-<that label>` belongs to the Deployment `<prefix>` (a ReplicaSet created by hand
//!   has no such label and stays a ReplicaSet);
//! - the CronJob controller names its Jobs `<cronjob>-<scheduled time in minutes since the
//!   epoch>`, so a Job named `<prefix>-<8 to 10 digits, no leading zero>` whose number is a minute after
//!   2016-01-01 (CronJobs did not exist before) is taken as the CronJob's. Any other Job stays a
//!   Job.
//!
//! So the agent needs read access to pods only.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::BTreeMap;

/// The label the Deployment controller puts on the pods of each of its ReplicaSets.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// 2016-01-01T00:00:00Z in minutes since the epoch: no CronJob was scheduled before.
const FIRST_CRONJOB_MINUTE: u64 = 1_451_606_400 / 60;

/// The kinds of workload a pod can belong to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    /// Any other controller (a custom resource, `Node` for static pods), by kind.
    Other(String),
}

impl OwnerKind {
    /// The OpenTelemetry attribute that carries a workload of this kind's name, if there is one.
    pub fn attribute_key(&self) -> Option<&'static str> {
        use super::keys;
        match self {
            Self::Deployment => Some(keys::DEPLOYMENT_NAME),
            Self::ReplicaSet => Some(keys::REPLICASET_NAME),
            Self::StatefulSet => Some(keys::STATEFULSET_NAME),
            Self::DaemonSet => Some(keys::DAEMONSET_NAME),
            Self::Job => Some(keys::JOB_NAME),
            Self::CronJob => Some(keys::CRONJOB_NAME),
            Self::Other(_) => None,
        }
    }
}

/// The workload a pod belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub kind: OwnerKind,
    pub name: String,
    /// The pod's direct controller when the workload was resolved through it: the ReplicaSet
    /// of a Deployment, the Job of a CronJob.
    pub via: Option<Box<Owner>>,
}

impl Owner {
    fn direct(kind: OwnerKind, name: &str) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            via: None,
        }
    }

    fn through(kind: OwnerKind, name: &str, controller: Owner) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            via: Some(Box::new(controller)),
        }
    }

    /// Resolves the workload of a pod from its owner references and labels. Only the
    /// controller reference counts (owners without `controller: true` do not manage the pod).
    pub fn resolve(
        references: &[OwnerReference],
        labels: &BTreeMap<String, String>,
    ) -> Option<Self> {
        let controller = references.iter().find(|r| r.controller == Some(true))?;
        let group = controller
            .api_version
            .split_once('/')
            .map_or("", |(group, _)| group);
        let name = controller.name.as_str();
        let owner = match (group, controller.kind.as_str()) {
            ("apps" | "extensions", "ReplicaSet") => {
                let replica_set = Self::direct(OwnerKind::ReplicaSet, name);
                match deployment_of(name, labels.get(POD_TEMPLATE_HASH_LABEL)) {
                    Some(deployment) => {
                        Self::through(OwnerKind::Deployment, deployment, replica_set)
                    }
                    None => replica_set,
                }
            }
            ("apps", "StatefulSet") => Self::direct(OwnerKind::StatefulSet, name),
            ("apps" | "extensions", "DaemonSet") => Self::direct(OwnerKind::DaemonSet, name),
            ("batch", "Job") => {
                let job = Self::direct(OwnerKind::Job, name);
                match cronjob_of(name) {
                    Some(cronjob) => Self::through(OwnerKind::CronJob, cronjob, job),
                    None => job,
                }
            }
            (_, kind) => Self::direct(OwnerKind::Other(kind.to_owned()), name),
        };
        Some(owner)
    }
}

/// `<deployment>-<hash>` with the pod's `pod-template-hash` label as the hash.
fn deployment_of<'a>(replica_set: &'a str, hash: Option<&String>) -> Option<&'a str> {
    let hash = hash.filter(|h| !h.is_empty())?;
    let deployment = replica_set.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    (!deployment.is_empty()).then_some(deployment)
}

/// `<cronjob>-<minutes since the epoch>`, see the module documentation.
fn cronjob_of(job: &str) -> Option<&str> {
    let (cronjob, minutes) = job.rsplit_once('-')?;
    let plausible = (8..=10).contains(&minutes.len())
        && !minutes.starts_with('0')
        && minutes.bytes().all(|b| b.is_ascii_digit())
        && minutes
            .parse::<u64>()
            .is_ok_and(|m| m >= FIRST_CRONJOB_MINUTE);
    (plausible && !cronjob.is_empty()).then_some(cronjob)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(api_version: &str, kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            uid: "f0c4c7a4-1111-2222-3333-444455556666".to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn hash_label(hash: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned())])
    }

    fn resolve(reference: OwnerReference, labels: &BTreeMap<String, String>) -> Owner {
        Owner::resolve(&[reference], labels).expect("a controller")
    }

    #[test]
    fn replica_set_of_a_deployment_resolves_to_the_deployment() {
        let reference = controller("apps/v1", "ReplicaSet", "web-frontend-7d9f8b6c5d");
        let owner = resolve(reference, &hash_label("7d9f8b6c5d"));
        assert_eq!(owner.kind, OwnerKind::Deployment);
        assert_eq!(owner.name, "web-frontend");
        let via = owner.via.expect("through the replica set");
        assert_eq!(
            (via.kind, via.name.as_str()),
            (OwnerKind::ReplicaSet, "web-frontend-7d9f8b6c5d")
        );
    }

    #[test]
    fn replica_set_without_matching_hash_stays_a_replica_set() {
        let none = BTreeMap::new();
        let cases = [
            ("web-7d9f8b6c5d", none.clone()),
            ("web-7d9f8b6c5d", hash_label("5c6b8f9d7")),
            ("web7d9f8b6c5d", hash_label("7d9f8b6c5d")),
            ("-7d9f8b6c5d", hash_label("7d9f8b6c5d")),
            ("web-", hash_label("")),
        ];
        for (name, labels) in cases {
            let owner = resolve(controller("apps/v1", "ReplicaSet", name), &labels);
            assert_eq!(owner, Owner::direct(OwnerKind::ReplicaSet, name), "{name}");
        }
    }

    #[test]
    fn stateful_and_daemon_sets_are_their_own_workload() {
        let none = BTreeMap::new();
        let stateful = resolve(controller("apps/v1", "StatefulSet", "db"), &none);
        assert_eq!(stateful, Owner::direct(OwnerKind::StatefulSet, "db"));
        let daemon = resolve(
            controller("apps/v1", "DaemonSet", "node-agent-12345678"),
            &none,
        );
        assert_eq!(
            daemon,
            Owner::direct(OwnerKind::DaemonSet, "node-agent-12345678")
        );
    }

    #[test]
    fn job_named_by_a_cronjob_resolves_to_the_cronjob() {
        let none = BTreeMap::new();
        // 29_500_000 minutes is in 2026.
        let owner = resolve(
            controller("batch/v1", "Job", "nightly-backup-29500000"),
            &none,
        );
        assert_eq!(owner.kind, OwnerKind::CronJob);
        assert_eq!(owner.name, "nightly-backup");
        assert_eq!(
            owner.via.map(|job| (job.kind, job.name)),
            Some((OwnerKind::Job, "nightly-backup-29500000".to_owned()))
        );
    }

    #[test]
    fn other_jobs_stay_jobs() {
        let none = BTreeMap::new();
        for name in [
            "migrate",
            "migrate-3",
            "backup-2024",
            "x-0029500000",
            "x-12345678",
            "-29500000",
        ] {
            let owner = resolve(controller("batch/v1", "Job", name), &none);
            assert_eq!(owner, Owner::direct(OwnerKind::Job, name), "{name}");
        }
    }

    #[test]
    fn unknown_kinds_and_groups_are_kept_by_kind() {
        let none = BTreeMap::new();
        let rollout = resolve(controller("argoproj.io/v1alpha1", "Rollout", "web"), &none);
        assert_eq!(rollout.kind, OwnerKind::Other("Rollout".to_owned()));
        assert_eq!(rollout.kind.attribute_key(), None);
        // A Job of another API group is not a batch Job.
        let volcano = resolve(
            controller("batch.volcano.sh/v1alpha1", "Job", "train-29500000"),
            &none,
        );
        assert_eq!(volcano.kind, OwnerKind::Other("Job".to_owned()));
        let mirror = resolve(controller("v1", "Node", "node-a"), &none);
        assert_eq!(mirror.kind, OwnerKind::Other("Node".to_owned()));
    }

    #[test]
    fn only_the_controller_reference_counts() {
        let mut reference = controller("apps/v1", "StatefulSet", "db");
        reference.controller = None;
        assert_eq!(Owner::resolve(&[reference.clone()], &BTreeMap::new()), None);
        let real = controller("apps/v1", "DaemonSet", "agent");
        let owner = Owner::resolve(&[reference, real], &BTreeMap::new());
        assert_eq!(owner, Some(Owner::direct(OwnerKind::DaemonSet, "agent")));
        assert_eq!(Owner::resolve(&[], &BTreeMap::new()), None);
    }
}
