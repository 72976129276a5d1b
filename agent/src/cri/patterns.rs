//! Which functions of a container runtime serve the CRI methods: the symbol patterns of
//! containerd 1.6/1.7, containerd 2.x and CRI-O, and [`resolve`] to find them in a binary.
//!
//! containerd wraps its CRI service twice: `(*instrumentedService).<Method>` (the gRPC entry
//! for CRI v1) and `(*instrumentedAlphaService).<Method>` (v1alpha2, in 1.6/1.7) both log, then
//! call `(*criService).<Method>`. The probes go on the v1 wrapper when the binary has it: it
//! takes the same v1 request and returns the same response, and it has 3 RET instructions where
//! `criService`'s handlers have up to 36 — fewer uprobes to attach and, above all, to detach
//! (each detach waits for a kernel grace period). The cost: v1alpha2 calls are not seen, which
//! only kubelets older than 1.26 make. Without the wrapper, `criService` is probed.
//! containerd 1.7 builds two services, `pkg/cri/server` and the experimental `pkg/cri/sbserver`
//! (chosen at start by `ENABLE_CRI_SANDBOXES`); both are resolved, the idle one never fires.
//! containerd 2.x moved the service to `internal/cri/server` and the image methods to
//! `internal/cri/server/images`.

use super::symbols::{Function, GoBinary};

pub use nodetrace_common::CriMethod;

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
    /// Thin wrappers probed instead of the receivers' handlers when the binary has them.
    wrappers: &'static [&'static str],
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
        wrappers: &[
            "github.com/containerd/containerd/pkg/cri/server.(*instrumentedService).",
            "github.com/containerd/containerd/pkg/cri/instrument.(*instrumentedService).",
        ],
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
        wrappers: &[
            "github.com/containerd/containerd/v2/internal/cri/instrument.(*instrumentedService).",
        ],
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
        wrappers: &[],
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
        let wrapper = pattern
            .wrappers
            .iter()
            .find_map(|prefix| binary.lookup(&format!("{prefix}{}", method.name())));
        if let Some(function) = wrapper {
            handlers.push(Handler {
                method,
                function: function.clone(),
            });
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::symbols::SymbolSource;

    fn binary(names: &[String]) -> GoBinary {
        let functions = names
            .iter()
            .enumerate()
            .map(|(i, name)| Function {
                name: name.clone(),
                address: 0x40_0000 + 0x100 * i as u64,
                size: 0x100,
                file_offset: 0x100 * i as u64,
                source: SymbolSource::Gopclntab,
            })
            .collect();
        GoBinary::from_functions(functions)
    }

    fn all_methods(prefix: &str) -> Vec<String> {
        CriMethod::ALL
            .iter()
            .map(|m| format!("{prefix}{}", m.name()))
            .collect()
    }

    #[test]
    fn containerd_17_resolves_both_services() {
        let mut names =
            all_methods("github.com/containerd/containerd/pkg/cri/server.(*criService).");
        names.extend(all_methods(
            "github.com/containerd/containerd/pkg/cri/sbserver.(*criService).",
        ));
        names.push(
            "github.com/containerd/containerd/pkg/cri/server.(*criService).RunPodSandbox.func1"
                .into(),
        );
        let resolved = resolve(&binary(&names)).unwrap();
        assert_eq!(resolved.runtime, RuntimeKind::Containerd16);
        assert!(resolved.missing.is_empty());
        let run: Vec<_> = resolved
            .handlers_of(CriMethod::RunPodSandbox)
            .map(|h| h.function.name.as_str())
            .collect();
        assert_eq!(
            run,
            [
                "github.com/containerd/containerd/pkg/cri/server.(*criService).RunPodSandbox",
                "github.com/containerd/containerd/pkg/cri/sbserver.(*criService).RunPodSandbox",
            ]
        );
    }

    #[test]
    fn containerd_2_takes_image_methods_from_the_images_package() {
        let server = "github.com/containerd/containerd/v2/internal/cri/server.(*criService).";
        let images = "github.com/containerd/containerd/v2/internal/cri/server/images.";
        let mut names: Vec<String> = CriMethod::ALL
            .iter()
            .filter(|m| !IMAGE_METHODS.contains(m))
            .map(|m| format!("{server}{}", m.name()))
            .collect();
        names.push(format!("{images}(*GRPCCRIImageService).PullImage"));
        names.push(format!("{images}(*GRPCCRIImageService).ListImages"));
        names.push(format!("{images}(*CRIImageService).ImageStatus"));
        // Same name, not the handler (takes an image name).
        names.push(format!("{images}(*CRIImageService).PullImage"));
        let resolved = resolve(&binary(&names)).unwrap();
        assert_eq!(resolved.runtime, RuntimeKind::Containerd2);
        assert!(resolved.missing.is_empty(), "{:?}", resolved.missing);
        let pull: Vec<_> = resolved.handlers_of(CriMethod::PullImage).collect();
        assert_eq!(pull.len(), 1);
        assert_eq!(
            pull[0].function.name,
            format!("{images}(*GRPCCRIImageService).PullImage")
        );
    }

    #[test]
    fn crio_resolves_and_reports_missing_methods() {
        let names: Vec<String> = all_methods("github.com/cri-o/cri-o/server.(*Server).")
            .into_iter()
            .filter(|n| !n.ends_with(").ExecSync"))
            .collect();
        let resolved = resolve(&binary(&names)).unwrap();
        assert_eq!(resolved.runtime, RuntimeKind::Crio);
        assert_eq!(resolved.runtime.name(), "cri-o");
        assert_eq!(resolved.missing, vec![CriMethod::ExecSync]);
        assert_eq!(resolved.handlers.len(), CriMethod::ALL.len() - 1);
    }

    #[test]
    fn a_binary_without_cri_handlers_is_no_runtime() {
        assert_eq!(resolve(&binary(&["main.main".to_owned()])), None);
    }

    #[test]
    fn lifecycle_methods_are_traced_and_the_others_polled() {
        let traced: Vec<_> = CriMethod::ALL.iter().filter(|m| m.is_traced()).collect();
        assert_eq!(traced.len(), 9);
        assert!(CriMethod::ExecSync.is_traced() && !CriMethod::ListContainers.is_traced());
    }
}
