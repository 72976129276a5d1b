//! Field offsets of the CRI request and response types, as the runtime binary itself tells
//! them: each is read from the generated getter `(*T).GetX` of the `k8s.io/cri-api` v1 types
//! (vendored or not), so they fit whatever generator and version built the binary.

use thiserror::Error;

use super::disasm::{self, DisasmError};
use super::getter;
use super::symbols::GoBinary;

/// The package of the CRI v1 types, as it appears in symbol names after any vendor prefix.
pub const CRI_V1_PACKAGE: &str = "k8s.io/cri-api/pkg/apis/runtime/v1.";

pub use nodetrace_common::{CRI_OFFSET_UNKNOWN as UNKNOWN_OFFSET, CriOffsets};

/// One field: the Go type and getter that tell it, and where it goes in [`CriOffsets`].
struct FieldGetter {
    type_name: &'static str,
    field: &'static str,
    slot: fn(&mut CriOffsets) -> &mut u32,
}

macro_rules! field_getters {
    ($($type_name:literal . $field:literal => $slot:ident,)*) => {
        const FIELD_GETTERS: &[FieldGetter] = &[$(FieldGetter {
            type_name: $type_name,
            field: $field,
            slot: |offsets| &mut offsets.$slot,
        },)*];

        /// Every field has a getter: the table and [`CriOffsets`] list the same fields.
        #[cfg(test)]
        const _ALL_FIELDS: CriOffsets = CriOffsets { $($slot: UNKNOWN_OFFSET,)* };
    };
}

field_getters! {
    "RunPodSandboxRequest"."Config" => run_pod_sandbox_request_config,
    "RunPodSandboxRequest"."RuntimeHandler" => run_pod_sandbox_request_runtime_handler,
    "PodSandboxConfig"."Metadata" => pod_sandbox_config_metadata,
    "PodSandboxMetadata"."Name" => pod_sandbox_metadata_name,
    "PodSandboxMetadata"."Uid" => pod_sandbox_metadata_uid,
    "PodSandboxMetadata"."Namespace" => pod_sandbox_metadata_namespace,
    "PodSandboxMetadata"."Attempt" => pod_sandbox_metadata_attempt,
    "RunPodSandboxResponse"."PodSandboxId" => run_pod_sandbox_response_pod_sandbox_id,
    "CreateContainerRequest"."PodSandboxId" => create_container_request_pod_sandbox_id,
    "CreateContainerRequest"."Config" => create_container_request_config,
    "CreateContainerRequest"."SandboxConfig" => create_container_request_sandbox_config,
    "ContainerConfig"."Metadata" => container_config_metadata,
    "ContainerConfig"."Image" => container_config_image,
    "ContainerMetadata"."Name" => container_metadata_name,
    "ContainerMetadata"."Attempt" => container_metadata_attempt,
    "ImageSpec"."Image" => image_spec_image,
    "CreateContainerResponse"."ContainerId" => create_container_response_container_id,
    "StartContainerRequest"."ContainerId" => start_container_request_container_id,
    "StopContainerRequest"."ContainerId" => stop_container_request_container_id,
    "StopContainerRequest"."Timeout" => stop_container_request_timeout,
    "RemoveContainerRequest"."ContainerId" => remove_container_request_container_id,
    "StopPodSandboxRequest"."PodSandboxId" => stop_pod_sandbox_request_pod_sandbox_id,
    "RemovePodSandboxRequest"."PodSandboxId" => remove_pod_sandbox_request_pod_sandbox_id,
    "PullImageRequest"."Image" => pull_image_request_image,
    "PullImageRequest"."SandboxConfig" => pull_image_request_sandbox_config,
    "PullImageResponse"."ImageRef" => pull_image_response_image_ref,
    "ExecSyncRequest"."ContainerId" => exec_sync_request_container_id,
    "ExecSyncRequest"."Timeout" => exec_sync_request_timeout,
}

/// Every offset with its field's name (`Type.Field`), in declaration order.
pub fn named_fields(offsets: &CriOffsets) -> Vec<(String, u32)> {
    let mut copy = *offsets;
    FIELD_GETTERS
        .iter()
        .map(|g| (format!("{}.{}", g.type_name, g.field), *(g.slot)(&mut copy)))
        .collect()
}

/// Whether every offset is known.
pub fn is_complete(offsets: &CriOffsets) -> bool {
    named_fields(offsets)
        .iter()
        .all(|&(_, offset)| offset != UNKNOWN_OFFSET)
}

/// Which protobuf generator produced the CRI types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    /// gogo/protobuf (or golang/protobuf APIv1): `XXX_Unmarshal` methods, no `ProtoReflect`.
    Gogo,
    /// google.golang.org/protobuf: `ProtoReflect` methods.
    GoProtobuf,
    /// Neither marker method is in the binary.
    Unknown,
}

/// The CRI types of a binary: where they are, who generated them, their field offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriTypes {
    /// The package prefix of the symbols, e.g.
    /// `github.com/containerd/containerd/vendor/k8s.io/cri-api/pkg/apis/runtime/v1.`.
    pub package: String,
    pub generator: Generator,
    pub offsets: CriOffsets,
    /// The fields (`Type.Field`) whose getter is missing or not of the expected shape.
    pub unknown: Vec<String>,
}

/// Why the CRI types could not be read.
#[derive(Debug, Error)]
pub enum OffsetError {
    #[error("{path} has no CRI v1 types ({CRI_V1_PACKAGE})")]
    NoCriTypes { path: String },
    #[error(transparent)]
    Disasm(#[from] DisasmError),
}

/// Finds the CRI v1 types of the binary and reads their field offsets from the getters.
pub fn cri_types(binary: &GoBinary) -> Result<CriTypes, OffsetError> {
    let package = cri_package(binary).ok_or_else(|| OffsetError::NoCriTypes {
        path: binary.path().display().to_string(),
    })?;
    let mut offsets = CriOffsets::UNKNOWN;
    let mut unknown = Vec::new();
    for getter in FIELD_GETTERS {
        let name = format!("{package}(*{}).Get{}", getter.type_name, getter.field);
        let offset = match binary.lookup(&name) {
            Some(function) => {
                let instructions = disasm::decode_function(binary, function)?;
                getter::field_offset(&instructions).and_then(|o| u32::try_from(o).ok())
            }
            None => None,
        };
        match offset {
            Some(offset) => *(getter.slot)(&mut offsets) = offset,
            None => unknown.push(format!("{}.{}", getter.type_name, getter.field)),
        }
    }
    Ok(CriTypes {
        generator: generator(binary, &package),
        package,
        offsets,
        unknown,
    })
}

/// The symbol prefix of the CRI v1 package: bare, or under a `/vendor/` directory.
fn cri_package(binary: &GoBinary) -> Option<String> {
    let marker = format!("{CRI_V1_PACKAGE}(*");
    binary.functions().iter().find_map(|function| {
        let at = function.name.find(&marker)?;
        let before = &function.name[..at];
        (before.is_empty() || before.ends_with("/vendor/"))
            .then(|| function.name[..at + CRI_V1_PACKAGE.len()].to_owned())
    })
}

/// Tells the generator from the marker methods of `RunPodSandboxRequest`.
fn generator(binary: &GoBinary, package: &str) -> Generator {
    let has = |method: &str| {
        binary
            .lookup(&format!("{package}(*RunPodSandboxRequest).{method}"))
            .is_some()
    };
    if has("ProtoReflect") {
        Generator::GoProtobuf
    } else if has("XXX_Unmarshal") {
        Generator::Gogo
    } else {
        Generator::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_is_the_default_and_every_field_is_listed() {
        let offsets = CriOffsets::default();
        assert_eq!(offsets, CriOffsets::UNKNOWN);
        let fields = named_fields(&offsets);
        assert_eq!(
            fields.len(),
            size_of::<CriOffsets>() / 4,
            "one getter per field"
        );
        assert!(fields.iter().all(|&(_, o)| o == UNKNOWN_OFFSET));
        assert!(!is_complete(&offsets));
    }

    #[test]
    fn fields_are_named_by_type_and_field() {
        let offsets = CriOffsets {
            pod_sandbox_metadata_uid: 16,
            ..CriOffsets::UNKNOWN
        };
        let uid = named_fields(&offsets)
            .into_iter()
            .find(|(name, _)| name == "PodSandboxMetadata.Uid")
            .unwrap();
        assert_eq!(uid.1, 16);
    }
}
