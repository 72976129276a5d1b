//! The container runtimes (and the Kubernetes components and etcd of the testbed's node) built
//! from the Go module proxy, pinned here (the one place their
//! versions are written; the wrapper modules under `xtask/go-wrappers/` repeat theirs and a
//! test checks they agree), built like upstream's release builds and cached by version outside
//! the work tree, so that setup builds only what is missing.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Where built runtimes are kept: `<dir>/<name>-<version>/<binary>`. The tests find them here
/// (`NODETRACE_RUNTIMES_DIR`).
pub const CACHE_DIR: &str = "/var/cache/nodetrace/runtimes";

/// The file in a runtime's cache directory that records how it was built; a build whose
/// recipe changed is done again.
const RECIPE_FILE: &str = "recipe.txt";

/// Where a runtime's source comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// `go install <package>@<version>`: upstream's go.mod has no replace or exclude lines.
    GoInstall,
    /// `go build` inside `xtask/go-wrappers/<dir>`, a module of ours requiring upstream's at
    /// the pinned version (with upstream's exclude lines copied), when `go install` refuses it.
    Wrapper(&'static str),
}

/// One executable of a runtime and how upstream's release builds it.
#[derive(Clone, Copy, Debug)]
struct Binary {
    name: &'static str,
    package: &'static str,
    tags: &'static str,
    ldflags: &'static str,
    cgo: bool,
}

/// A pinned runtime.
#[derive(Clone, Copy, Debug)]
struct Runtime {
    name: &'static str,
    version: &'static str,
    source: Source,
    binaries: &'static [Binary],
    why: &'static str,
}

impl Runtime {
    fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    /// What decides the build's output, written next to it.
    fn recipe(&self) -> String {
        let mut text = format!("{} {} {:?}\n", self.name, self.version, self.source);
        for b in self.binaries {
            text.push_str(&format!(
                "{} {} tags=[{}] ldflags=[{}] cgo={}\n",
                b.name, b.package, b.tags, b.ldflags, b.cgo
            ));
        }
        text
    }
}

const CONTAINERD_V2: &str = "github.com/containerd/containerd/v2/cmd/containerd";
const CONTAINERD_V2_SHIM: &str = "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2";
/// containerd's release shim is a static, internally linked Go program.
const SHIM_LDFLAGS: &str = "-s -w";

/// A containerd built without cgo (`no_btrfs`), so internally linked, and stripped.
const fn internally_linked_containerd(package: &'static str) -> Binary {
    Binary {
        name: "containerd",
        package,
        tags: "no_btrfs",
        ldflags: "-s -w",
        cgo: false,
    }
}

/// containerd's runc shim, static and stripped like its release.
const fn shim(package: &'static str) -> Binary {
    Binary {
        name: "containerd-shim-runc-v2",
        package,
        tags: "",
        ldflags: SHIM_LDFLAGS,
        cgo: false,
    }
}

/// The pinned runtimes, newest first within each line.
const RUNTIMES: &[Runtime] = &[
    Runtime {
        name: "containerd",
        version: "v2.4.2",
        source: Source::GoInstall,
        binaries: &[
            Binary {
                name: "containerd",
                package: CONTAINERD_V2,
                // Release builds link externally (cgo) and are stripped: the shape Go 1.26
                // changed (runtime.text 0x100 after the start of .text).
                tags: "no_btrfs",
                ldflags: "-s -w -linkmode=external",
                cgo: true,
            },
            shim(CONTAINERD_V2_SHIM),
        ],
        why: "the newest containerd 2.x (Go 1.26, externally linked, stripped)",
    },
    Runtime {
        name: "containerd",
        version: "v2.2.10",
        source: Source::GoInstall,
        binaries: &[
            // Internally linked: with Go 1.26 the other shape of a zero pclntab text start.
            internally_linked_containerd(CONTAINERD_V2),
            shim(CONTAINERD_V2_SHIM),
        ],
        why: "containerd 2.2 (CRI types from google.golang.org/protobuf)",
    },
    Runtime {
        name: "containerd",
        version: "v2.0.14",
        source: Source::Wrapper("containerd-v2.0.14"),
        binaries: &[
            internally_linked_containerd(CONTAINERD_V2),
            shim(CONTAINERD_V2_SHIM),
        ],
        why: "containerd 2.0 (gogo CRI types, internal/cri paths)",
    },
    Runtime {
        name: "containerd",
        version: "v1.7.30",
        source: Source::Wrapper("containerd-v1.7.30"),
        binaries: &[
            internally_linked_containerd("github.com/containerd/containerd/cmd/containerd"),
            shim("github.com/containerd/containerd/cmd/containerd-shim-runc-v2"),
        ],
        why: "containerd 1.7 (pkg/cri paths, v1alpha2 still served)",
    },
    Runtime {
        name: "runc",
        version: "v1.5.3",
        source: Source::GoInstall,
        binaries: &[Binary {
            name: "runc",
            package: "github.com/opencontainers/runc",
            tags: "seccomp",
            ldflags: "-s -w",
            cgo: true,
        }],
        why: "the newest runc (Debian's 1.1.5 stays too)",
    },
    Runtime {
        name: "cri-o",
        version: "v1.36.3",
        source: Source::Wrapper("cri-o-v1.36.3"),
        binaries: &[Binary {
            name: "crio",
            package: "github.com/cri-o/cri-o/cmd/crio",
            tags: "containers_image_openpgp exclude_graphdriver_btrfs seccomp",
            ldflags: "-s -w -linkmode=external",
            cgo: true,
        }],
        why: "CRI-O 1.36 (Go 1.26, externally linked), for the probe plan",
    },
    Runtime {
        name: "kubernetes",
        version: "v1.37.2",
        source: Source::Wrapper("kubernetes-v1.37.2"),
        binaries: &[
            k8s_binary("kubelet", "k8s.io/kubernetes/cmd/kubelet"),
            k8s_binary("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
            k8s_binary(
                "kube-controller-manager",
                "k8s.io/kubernetes/cmd/kube-controller-manager",
            ),
            k8s_binary("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
            k8s_binary("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
        ],
        why: "the node and control plane of the testbed's cluster",
    },
    Runtime {
        name: "etcd",
        version: "v3.7.4",
        source: Source::Wrapper("etcd-v3.7.4"),
        binaries: &[Binary {
            name: "etcd",
            package: "go.etcd.io/etcd/server/v3",
            tags: "",
            ldflags: "-s -w",
            cgo: false,
        }],
        why: "the API server's store (the version Kubernetes 1.37 defaults to)",
    },
];

/// The version Kubernetes' release stamps into its binaries (`--version`, the node's
/// kubeletVersion, the API server's /version).
const K8S_VERSION_LDFLAGS: &str = "-s -w \
    -X k8s.io/component-base/version.gitVersion=v1.37.2 \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=37 \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=v1.37.2 \
    -X k8s.io/client-go/pkg/version.gitMajor=1 \
    -X k8s.io/client-go/pkg/version.gitMinor=37";

/// A Kubernetes command (`k8s.io/kubernetes/cmd/<name>`), built static like upstream's release.
const fn k8s_binary(name: &'static str, package: &'static str) -> Binary {
    Binary {
        name,
        package,
        tags: "",
        ldflags: K8S_VERSION_LDFLAGS,
        cgo: false,
    }
}

/// The cache directory names of every pinned runtime (`containerd-v2.4.2`, ...), which the
/// tests require to find (`NODETRACE_RUNTIMES`).
pub fn pinned() -> Vec<String> {
    RUNTIMES.iter().map(Runtime::dir_name).collect()
}

/// The machine's Go: on PATH, else where the machine kind installs it.
fn go() -> anyhow::Result<PathBuf> {
    for candidate in [Path::new("go"), Path::new("/usr/local/go/bin/go")] {
        if Command::new(candidate)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(candidate.to_owned());
        }
    }
    bail!("no Go toolchain (`go`, or /usr/local/go/bin/go): the runtimes are built with it")
}

/// The committed wrapper modules.
fn wrappers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go-wrappers")
}

/// Builds every pinned runtime that is not in the cache yet (or was built by another
/// recipe); returns how many were built.
pub fn ensure_built(step: impl Fn(&str)) -> anyhow::Result<usize> {
    let mut built = 0;
    let todo: Vec<&Runtime> = RUNTIMES
        .iter()
        .filter(|r| !is_cached(r, Path::new(CACHE_DIR)))
        .collect();
    for (i, runtime) in todo.iter().enumerate() {
        let go = go()?;
        step(&format!(
            "building {} {} from the Go module proxy ({}/{}): {} (a few minutes)",
            runtime.name,
            runtime.version,
            i + 1,
            todo.len(),
            runtime.why
        ));
        let started = Instant::now();
        build(&go, runtime, Path::new(CACHE_DIR))?;
        step(&format!(
            "built {} {} in {:.0} s",
            runtime.name,
            runtime.version,
            started.elapsed().as_secs_f64()
        ));
        built += 1;
    }
    Ok(built)
}

fn is_cached(runtime: &Runtime, cache: &Path) -> bool {
    let dir = cache.join(runtime.dir_name());
    std::fs::read_to_string(dir.join(RECIPE_FILE)).is_ok_and(|r| r == runtime.recipe())
        && runtime.binaries.iter().all(|b| dir.join(b.name).is_file())
}

fn build(go: &Path, runtime: &Runtime, cache: &Path) -> anyhow::Result<()> {
    let dir = cache.join(runtime.dir_name());
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    // Binaries built the same way go through one `go` command: they share most packages, and
    // the go command compiles each once and links them in parallel.
    let mut groups: Vec<Vec<&Binary>> = Vec::new();
    for binary in runtime.binaries {
        match groups.last_mut() {
            Some(group)
                if (group[0].tags, group[0].ldflags, group[0].cgo)
                    == (binary.tags, binary.ldflags, binary.cgo) =>
            {
                group.push(binary);
            }
            _ => groups.push(vec![binary]),
        }
    }
    for group in groups {
        let first = group[0];
        let mut command = Command::new(go);
        match runtime.source {
            Source::GoInstall => {
                command
                    .arg("install")
                    .env("GOBIN", &partial)
                    .env("GOFLAGS", "-buildvcs=false")
                    .current_dir(cache);
            }
            Source::Wrapper(wrapper) => {
                // `-o dir/` with a trailing slash: every package's binary into it.
                let mut out = partial.clone().into_os_string();
                out.push("/");
                command
                    .arg("build")
                    .arg("-o")
                    .arg(out)
                    .current_dir(wrappers_dir().join(wrapper))
                    // The committed go.sum is the whole truth: nothing is resolved anew.
                    .env("GOFLAGS", "-buildvcs=false -mod=readonly");
            }
        }
        if !first.tags.is_empty() {
            command.args(["-tags", first.tags]);
        }
        command
            .arg(format!("-ldflags={}", first.ldflags))
            .args(group.iter().map(|binary| match runtime.source {
                Source::GoInstall => format!("{}@{}", binary.package, runtime.version),
                Source::Wrapper(_) => binary.package.to_owned(),
            }))
            .env("CGO_ENABLED", if first.cgo { "1" } else { "0" });
        let status = command
            .status()
            .with_context(|| format!("cannot run {}", go.display()))?;
        let packages: Vec<&str> = group.iter().map(|b| b.package).collect();
        if !status.success() {
            bail!(
                "building {} of {} {} failed ({status})",
                packages.join(" "),
                runtime.name,
                runtime.version
            );
        }
        for binary in group {
            let built = partial.join(go_output_name(binary.package));
            let wanted = partial.join(binary.name);
            if built != wanted {
                std::fs::rename(&built, &wanted).with_context(|| {
                    format!("cannot rename {} to {}", built.display(), wanted.display())
                })?;
            }
        }
    }
    std::fs::write(partial.join(RECIPE_FILE), runtime.recipe())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("cannot move the build to {}", dir.display()))?;
    Ok(())
}

/// The file name the go command gives a main package's binary: its last path element, or the
/// one before a major-version suffix (`go.etcd.io/etcd/server/v3` → `server`).
fn go_output_name(package: &str) -> &str {
    let mut elements = package.rsplit('/');
    let last = elements.next().unwrap_or(package);
    let is_major =
        last.len() > 1 && last.starts_with('v') && last[1..].chars().all(|c| c.is_ascii_digit());
    if is_major {
        elements.next().unwrap_or(last)
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapper module requires upstream at exactly the pinned version, and declares the
    /// packages built from it as tools.
    #[test]
    fn wrapper_modules_pin_the_same_versions() {
        for runtime in RUNTIMES {
            let Source::Wrapper(dir) = runtime.source else {
                continue;
            };
            let go_mod = std::fs::read_to_string(wrappers_dir().join(dir).join("go.mod"))
                .unwrap_or_else(|e| panic!("{dir}/go.mod: {e}"));
            assert!(
                wrappers_dir().join(dir).join("go.sum").is_file(),
                "{dir}: go.sum is committed"
            );
            let module = runtime.binaries[0]
                .package
                .split("/cmd/")
                .next()
                .expect("a module path");
            let required = go_mod.lines().any(|line| {
                let mut words = line.split_whitespace();
                let first = words.next();
                let (path, version) = if first == Some("require") {
                    (words.next(), words.next())
                } else {
                    (first, words.next())
                };
                path == Some(module) && version == Some(runtime.version)
            });
            assert!(
                required,
                "{dir}/go.mod must require {module} {}",
                runtime.version
            );
            for binary in runtime.binaries {
                assert!(
                    go_mod.contains(&format!("\t{}\n", binary.package))
                        || go_mod.contains(&format!("tool {}\n", binary.package)),
                    "{dir}/go.mod must list {} as a tool",
                    binary.package
                );
            }
        }
    }

    #[test]
    fn binaries_are_named_as_the_go_command_names_them() {
        assert_eq!(go_output_name("k8s.io/kubernetes/cmd/kubelet"), "kubelet");
        assert_eq!(go_output_name("go.etcd.io/etcd/server/v3"), "server");
        assert_eq!(go_output_name("github.com/opencontainers/runc"), "runc");
        assert_eq!(go_output_name("example.com/v2tools"), "v2tools");
    }

    #[test]
    fn every_wrapper_module_is_used() {
        for entry in std::fs::read_dir(wrappers_dir()).expect("go-wrappers") {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                RUNTIMES
                    .iter()
                    .any(|r| matches!(r.source, Source::Wrapper(w) if w == name)),
                "xtask/go-wrappers/{name} is pinned by no runtime"
            );
        }
    }

    #[test]
    fn a_changed_recipe_is_built_again() {
        let cache = std::env::temp_dir().join(format!("xtask-recipe-{}", std::process::id()));
        let runtime = &RUNTIMES[0];
        let dir = cache.join(runtime.dir_name());
        std::fs::create_dir_all(&dir).expect("dir");
        for b in runtime.binaries {
            std::fs::write(dir.join(b.name), b"").expect("binary");
        }
        assert!(!is_cached(runtime, &cache), "no recipe: not cached");
        std::fs::write(dir.join(RECIPE_FILE), "containerd v0 GoInstall\n").expect("recipe");
        assert!(!is_cached(runtime, &cache), "another recipe");
        std::fs::write(dir.join(RECIPE_FILE), runtime.recipe()).expect("recipe");
        assert!(is_cached(runtime, &cache));
        std::fs::remove_file(dir.join(runtime.binaries[0].name)).expect("rm");
        assert!(!is_cached(runtime, &cache), "a binary is missing");
        std::fs::remove_dir_all(&cache).expect("clean up");
    }
}
