//! Which functions of a container runtime serve the CRI methods: the symbol patterns of
//! containerd 1.6/1.7, containerd 2.x and CRI-O, and [`resolve`] to find them in a binary.
//!
//! containerd wraps its CRI service twice: `(*instrumentedService).<Method>` (the gRPC entry
//! for CRI v1) and `(*instrumentedAlphaService).<Method>` (v1alpha2, in 1.6/1.7) both log, then
//! call `(*criService).<Method>`. The probes go on `criService`: every call of either API
//! version reaches it, always with the v1 request types (the alpha wrapper converts), so one set
//! of field offsets reads them all; the wrappers take different request types per version.
//! containerd 1.7 builds two services, `pkg/cri/server` and the experimental `pkg/cri/sbserver`
//! (chosen at start by `ENABLE_CRI_SANDBOXES`); both are resolved, the idle one never fires.
//! containerd 2.x moved the service to `internal/cri/server` and the image methods to
//! `internal/cri/server/images`.

use std::fmt;

use super::symbols::{Function, GoBinary};

/// A CRI method that nodetrace probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CriMethod {
    RunPodSandbox,
    StopPodSandbox,
    RemovePodSandbox,
    CreateContainer,
    StartContainer,
    StopContainer,
    RemoveContainer,
    PullImage,
    ExecSync,
    PodSandboxStatus,
    ContainerStatus,
    ListPodSandbox,
    ListContainers,
    ImageStatus,
    ListImages,
    Version,
    Status,
    ContainerStats,
    ListContainerStats,
}

impl CriMethod {
    /// Every method, the lifecycle ones first.
    pub const ALL: [Self; 19] = [
        Self::RunPodSandbox,
        Self::StopPodSandbox,
        Self::RemovePodSandbox,
        Self::CreateContainer,
        Self::StartContainer,
        Self::StopContainer,
        Self::RemoveContainer,
        Self::PullImage,
        Self::ExecSync,
        Self::PodSandboxStatus,
        Self::ContainerStatus,
        Self::ListPodSandbox,
        Self::ListContainers,
        Self::ImageStatus,
        Self::ListImages,
        Self::Version,
        Self::Status,
        Self::ContainerStats,
        Self::ListContainerStats,
    ];

    /// The gRPC method name (also the Go method name).
    pub const fn name(self) -> &'static str {
        match self {
            Self::RunPodSandbox => "RunPodSandbox",
            Self::StopPodSandbox => "StopPodSandbox",
            Self::RemovePodSandbox => "RemovePodSandbox",
            Self::CreateContainer => "CreateContainer",
            Self::StartContainer => "StartContainer",
            Self::StopContainer => "StopContainer",
            Self::RemoveContainer => "RemoveContainer",
            Self::PullImage => "PullImage",
            Self::ExecSync => "ExecSync",
            Self::PodSandboxStatus => "PodSandboxStatus",
            Self::ContainerStatus => "ContainerStatus",
            Self::ListPodSandbox => "ListPodSandbox",
            Self::ListContainers => "ListContainers",
            Self::ImageStatus => "ImageStatus",
            Self::ListImages => "ListImages",
            Self::Version => "Version",
            Self::Status => "Status",
            Self::ContainerStats => "ContainerStats",
            Self::ListContainerStats => "ListContainerStats",
        }
    }

    /// Whether kubelet polls this method: it is counted, not traced as a span.
    pub const fn is_polled(self) -> bool {
        matches!(
            self,
            Self::PodSandboxStatus
                | Self::ContainerStatus
                | Self::ListPodSandbox
                | Self::ListContainers
                | Self::ImageStatus
                | Self::ListImages
                | Self::Version
                | Self::Status
                | Self::ContainerStats
                | Self::ListContainerStats
        )
    }
}

impl fmt::Display for CriMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A runtime family whose CRI handlers have one symbol layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// containerd 1.6 and 1.7 (`pkg/cri/server`, and `pkg/cri/sbserver` in 1.7).
    Containerd16,
    /// containerd 2.x (`internal/cri/server`).
    Containerd2,
    /// CRI-O (`server.(*Server)`).
    Crio,
}

impl RuntimeKind {
    /// The `container.runtime` name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Containerd16 | Self::Containerd2 => "containerd",
            Self::Crio => "cri-o",
        }
    }
}

/// Methods of one Go receiver type: `prefix` + method name is the symbol.
struct Receiver {
    prefix: &'static str,
    /// The methods it serves; empty for all of them.
    only: &'static [CriMethod],
    /// Methods it has under the same name that are not the CRI handler.
    except: &'static [CriMethod],
}

impl Receiver {
    fn serves(&self, method: CriMethod) -> bool {
        (self.only.is_empty() || self.only.contains(&method)) && !self.except.contains(&method)
    }
}

struct RuntimePattern {
    runtime: RuntimeKind,
    receivers: &'static [Receiver],
}

const IMAGE_METHODS: &[CriMethod] = &[
    CriMethod::PullImage,
    CriMethod::ImageStatus,
    CriMethod::ListImages,
];

/// The symbol patterns of every known runtime.
const PATTERNS: &[RuntimePattern] = &[
    RuntimePattern {
        runtime: RuntimeKind::Containerd16,
        receivers: &[
            Receiver {
                prefix: "github.com/containerd/containerd/pkg/cri/server.(*criService).",
                only: &[],
                except: &[],
            },
            Receiver {
                prefix: "github.com/containerd/containerd/pkg/cri/sbserver.(*criService).",
                only: &[],
                except: &[],
            },
        ],
    },
    RuntimePattern {
        runtime: RuntimeKind::Containerd2,
        receivers: &[
            Receiver {
                prefix: "github.com/containerd/containerd/v2/internal/cri/server.(*criService).",
                only: &[],
                except: IMAGE_METHODS,
            },
            // `(*CRIImageService).PullImage` takes a name, not the request: not the handler.
            Receiver {
                prefix: "github.com/containerd/containerd/v2/internal/cri/server/images.(*GRPCCRIImageService).",
                only: &[CriMethod::PullImage, CriMethod::ListImages],
                except: &[],
            },
            Receiver {
                prefix: "github.com/containerd/containerd/v2/internal/cri/server/images.(*CRIImageService).",
                only: &[CriMethod::ImageStatus],
                except: &[],
            },
        ],
    },
    RuntimePattern {
        runtime: RuntimeKind::Crio,
        receivers: &[Receiver {
            prefix: "github.com/cri-o/cri-o/server.(*Server).",
            only: &[],
            except: &[],
        }],
    },
];

/// One function to probe for one method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    pub method: CriMethod,
    pub function: Function,
}

/// The CRI handlers found in a runtime binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRuntime {
    pub runtime: RuntimeKind,
    /// In [`CriMethod::ALL`] order; a method can have more than one (containerd 1.7).
    pub handlers: Vec<Handler>,
    /// Methods with no handler in this binary.
    pub missing: Vec<CriMethod>,
}

impl ResolvedRuntime {
    /// The handlers of one method.
    pub fn handlers_of(&self, method: CriMethod) -> impl Iterator<Item = &Handler> {
        self.handlers.iter().filter(move |h| h.method == method)
    }
}

/// Finds the CRI handlers of the runtime the binary is, or `None` when it has none of them.
///
/// When several patterns match (never in a real binary), the one with most handlers wins.
pub fn resolve(binary: &GoBinary) -> Option<ResolvedRuntime> {
    PATTERNS
        .iter()
        .map(|pattern| resolve_pattern(binary, pattern))
        .filter(|resolved| !resolved.handlers.is_empty())
        .max_by_key(|resolved| resolved.handlers.len())
}

fn resolve_pattern(binary: &GoBinary, pattern: &RuntimePattern) -> ResolvedRuntime {
    let mut handlers = Vec::new();
    let mut missing = Vec::new();
    for method in CriMethod::ALL {
        let found: Vec<Handler> = pattern
            .receivers
            .iter()
            .filter(|receiver| receiver.serves(method))
            .filter_map(|receiver| binary.lookup(&format!("{}{}", receiver.prefix, method.name())))
            .map(|function| Handler {
                method,
                function: function.clone(),
            })
            .collect();
        if found.is_empty() {
            missing.push(method);
        }
        handlers.extend(found);
    }
    ResolvedRuntime {
        runtime: pattern.runtime,
        handlers,
        missing,
    }
}
