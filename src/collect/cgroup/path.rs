//! Cgroup path → container identity (pure; every shape of
//! `shared/fixtures/cgroup_paths.md` is a test case).
//!
//! A path is read component by component, left to right. What is recognised:
//!
//! | shape | runtime | pod |
//! |---|---|---|
//! | `…/kubepods[/burstable\|/besteffort]/pod<uid>/<64 hex>` (kubelet cgroupfs driver) | containerd (guessed, see below) | yes |
//! | `…/kubepods[/<qos>]/pod<uid>/crio-<id>` | cri-o | yes |
//! | `…/kubepods[-<qos>]-pod<uid_with_underscores>.slice/{cri-containerd,crio,docker}-<id>[.scope]` (systemd driver, any nesting) | as the prefix says | yes |
//! | `…/<pod slice>:{cri-containerd,crio,docker}:<id>` (systemd `cgroupsPath` form) | as the prefix says | yes |
//! | `…/docker/<64 hex>`, `…/docker-<id>.scope` | docker | no |
//! | `…/libpod-<id>.scope`, `…/libpod-payload-<id>` | podman | no |
//! | `/system.slice[/<sub>.slice…]/<unit>.service` | systemd (name = unit name, `\x2d` unescaped; no container id) | no |
//!
//! Rules worth knowing:
//! - Container ids are exactly 64 lowercase hex digits; so `crio-conmon-<id>`
//!   or `libpod-conmon-<id>` (runtime monitors) are not containers.
//! - The innermost match wins: `/system.slice/containerd.service/…:cri-containerd:<id>`
//!   is the container, not the service; `/docker/<node>/kubepods/…/pod<uid>/<id>`
//!   (kind) is the inner container. A `kubepods` root seen below an outer
//!   container starts afresh, so a pod cgroup inside a kind node is `None`.
//! - Children of the container (`/container`, `/kube-proxy`, …) are cut: the
//!   result's `cgroup` is the prefix of the input ending at the container.
//! - Pod-level cgroups (`…/pod<uid>` with nothing below) are not containers:
//!   `None`. So are `/`, `/kubepods`, `/user.slice`, `*.slice`, `init.scope`,
//!   `user@1000.service` (only services under `system.slice` count), LXC
//!   (`/lxc/<name>`) and Talos' `/podruntime/runtime` (no runtime of ours).
//! - `..` components (a path read from inside a cgroup namespace, e.g.
//!   `0::/../../../../system.slice/docker-<id>.scope`) are skipped; the
//!   returned `cgroup` keeps them, the caller resolves it against its own
//!   cgroup.
//! - Under the cgroupfs driver a bare id does not say which runtime made it:
//!   it is reported as containerd (the default CRI since dockershim went) with
//!   `runtime_guessed = true`; the pod status's `containerID` scheme can tell.
//! - Pod UIDs come back in API form: systemd's underscores turned back into
//!   dashes; static-pod UIDs (32 hex, no dashes) are kept as they are.

use crate::model::{ContainerIdentity, QosClass, Runtime};

/// A container cgroup found in a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified<'a> {
    pub identity: ContainerIdentity,
    /// The container's own cgroup: the prefix of the input path that ends at
    /// the container directory (children such as `/container` are cut).
    pub cgroup: &'a str,
    /// The runtime is an assumption (a bare id under the cgroupfs driver),
    /// not read from the path.
    pub runtime_guessed: bool,
}

/// Classify a cgroup path relative to its hierarchy's root (as in
/// `/proc/<pid>/cgroup` or a directory below a controller mount), e.g.
/// `/kubepods/burstable/pod<uid>/<id>` or
/// `/kubepods.slice/.../cri-containerd-<id>.scope`. `None` when the path is
/// not (inside) a container or service cgroup.
pub fn classify(path: &str) -> Option<Classified<'_>> {
    let mut best: Option<Classified<'_>> = None;
    // What the previous components said about where we are.
    let mut ctx = Ctx::None;
    // Inside `/system.slice` and only `*.slice` since.
    let mut in_system_slice = false;

    for (comp, end) in components(path) {
        if comp == ".." || comp == "." {
            ctx = Ctx::None;
            in_system_slice = false;
            continue;
        }
        let found = container_in(comp, &ctx);
        let next_ctx = next_context(comp, &ctx);
        if let Some((identity, guessed)) = found {
            best = Some(Classified {
                identity,
                cgroup: &path[..end],
                runtime_guessed: guessed,
            });
        } else if in_system_slice && let Some(unit) = comp.strip_suffix(".service") {
            if !unit.is_empty() {
                let name = unescape_unit(comp);
                best = Some(Classified {
                    identity: ContainerIdentity {
                        runtime: Runtime::Systemd,
                        container_id: String::new(),
                        pod_uid: None,
                        qos: None,
                        name,
                    },
                    cgroup: &path[..end],
                    runtime_guessed: false,
                });
            }
        } else if is_kubepods_root(comp) {
            // a pod tree below an outer container (kind): start afresh
            best = None;
        }
        in_system_slice = (comp == "system.slice" && !in_system_slice)
            || (in_system_slice && comp.ends_with(".slice"));
        ctx = next_ctx;
    }
    best
}

/// Split one line of `/proc/<pid>/cgroup` (`<id>:<controllers>:<path>`) into
/// its controllers (empty for cgroup v2) and path. The path may itself hold
/// `:` (the `slice:prefix:id` form), so only the first two are split on.
pub fn split_proc_cgroup_line(line: &str) -> Option<(&str, &str)> {
    let (id, rest) = line.split_once(':')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (controllers, path) = rest.split_once(':')?;
    Some((controllers, path.trim_end_matches('\n')))
}

/// Where the components seen so far put us in a kubelet tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ctx {
    None,
    /// Just below `kubepods` (cgroupfs).
    Kubepods,
    /// Just below `kubepods/<qos>` (cgroupfs).
    Qos(QosClass),
    /// Just below a pod directory (either driver).
    Pod {
        uid: String,
        qos: QosClass,
    },
    /// Just below a `docker` directory (plain docker, cgroupfs).
    Docker,
}

fn next_context(comp: &str, ctx: &Ctx) -> Ctx {
    if comp == "kubepods" {
        return Ctx::Kubepods;
    }
    if comp == "docker" {
        return Ctx::Docker;
    }
    if let Some((qos, uid)) = pod_slice(comp) {
        return Ctx::Pod { uid, qos };
    }
    match ctx {
        Ctx::Kubepods => match comp {
            "burstable" => Ctx::Qos(QosClass::Burstable),
            "besteffort" => Ctx::Qos(QosClass::BestEffort),
            _ => cgroupfs_pod(comp, QosClass::Guaranteed),
        },
        Ctx::Qos(q) => cgroupfs_pod(comp, *q),
        _ => Ctx::None,
    }
}

/// The kubelet's root of pod cgroups: `kubepods` (cgroupfs), `kubepods.slice`
/// or `<prefix>-kubepods.slice` (systemd).
fn is_kubepods_root(comp: &str) -> bool {
    comp == "kubepods" || comp == "kubepods.slice" || comp.ends_with("-kubepods.slice")
}

fn cgroupfs_pod(comp: &str, qos: QosClass) -> Ctx {
    match comp.strip_prefix("pod").and_then(pod_uid) {
        Some(uid) => Ctx::Pod { uid, qos },
        None => Ctx::None,
    }
}

/// The container `comp` names, given where it sits; and whether the runtime
/// is a guess.
fn container_in(comp: &str, ctx: &Ctx) -> Option<(ContainerIdentity, bool)> {
    let (pod_uid, qos) = match ctx {
        Ctx::Pod { uid, qos } => (Some(uid.clone()), Some(*qos)),
        _ => (None, None),
    };
    let make = |runtime, id: &str, pod_uid: Option<String>, qos| ContainerIdentity {
        runtime,
        container_id: id.to_string(),
        pod_uid,
        qos,
        name: id.to_string(),
    };

    // systemd cgroupsPath form: `<pod slice>:<prefix>:<id>`
    if let Some((slice, rest)) = comp.split_once(':') {
        let (prefix, id) = rest.split_once(':')?;
        let runtime = runtime_of_prefix(prefix)?;
        if !is_container_id(id) {
            return None;
        }
        let (qos, uid) = match pod_slice(slice) {
            Some((q, u)) => (Some(q), Some(u)),
            None => (None, None),
        };
        return Some((make(runtime, id, uid, qos), false));
    }

    let stem = comp.strip_suffix(".scope").unwrap_or(comp);
    for (prefix, runtime) in [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("docker-", Runtime::Docker),
        ("libpod-payload-", Runtime::Podman),
        ("libpod-", Runtime::Podman),
    ] {
        if let Some(id) = stem.strip_prefix(prefix) {
            if !is_container_id(id) {
                return None;
            }
            return Some((make(runtime, id, pod_uid, qos), false));
        }
    }
    if is_container_id(comp) {
        match ctx {
            Ctx::Pod { .. } => {
                return Some((make(Runtime::Containerd, comp, pod_uid, qos), true));
            }
            Ctx::Docker => return Some((make(Runtime::Docker, comp, None, None), false)),
            _ => {}
        }
    }
    None
}

fn runtime_of_prefix(prefix: &str) -> Option<Runtime> {
    match prefix {
        "cri-containerd" => Some(Runtime::Containerd),
        "crio" => Some(Runtime::Crio),
        "docker" => Some(Runtime::Docker),
        "libpod" => Some(Runtime::Podman),
        _ => None,
    }
}

/// A systemd pod slice: `[<prefix>-]kubepods[-burstable|-besteffort]-pod<uid>.slice`
/// (the prefix appears when the kubelet's cgroup root is not `/`, e.g.
/// `kubelet-kubepods-…`). The UID has underscores for dashes.
fn pod_slice(comp: &str) -> Option<(QosClass, String)> {
    let stem = comp.strip_suffix(".slice")?;
    let (head, uid) = stem.rsplit_once("-pod")?;
    let qos = if let Some(h) = head.strip_suffix("-burstable") {
        (h, QosClass::Burstable)
    } else if let Some(h) = head.strip_suffix("-besteffort") {
        (h, QosClass::BestEffort)
    } else {
        (head, QosClass::Guaranteed)
    };
    let (root, qos) = qos;
    if root != "kubepods" && !root.ends_with("-kubepods") {
        return None;
    }
    Some((qos, pod_uid(uid)?))
}

/// A pod UID in API form, from a dashed or underscored UUID or a 32-hex
/// static-pod hash.
fn pod_uid(s: &str) -> Option<String> {
    let ok = match s.len() {
        32 => s.bytes().all(|b| b.is_ascii_hexdigit()),
        36 => s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-' || b == b'_',
            _ => b.is_ascii_hexdigit(),
        }),
        _ => false,
    };
    ok.then(|| s.replace('_', "-"))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Non-empty `/`-separated components with the byte offset where each ends.
fn components(path: &str) -> impl Iterator<Item = (&str, usize)> {
    let base = path.as_ptr() as usize;
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(move |c| (c, c.as_ptr() as usize - base + c.len()))
}

/// Undo systemd's unit-name escaping (`\x2d` → `-`); anything that is not a
/// valid `\xHH` escape is kept as it is.
pub fn unescape_unit(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some((before, after)) = rest.split_once("\\x") {
        out.push_str(before);
        let byte = after
            .get(..2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .filter(u8::is_ascii);
        match byte {
            Some(b) => {
                out.push(b as char);
                rest = &after[2..];
            }
            None => {
                out.push_str("\\x");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id64(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[track_caller]
    fn check(
        path: &str,
        runtime: Runtime,
        id: &str,
        pod: Option<&str>,
        qos: Option<QosClass>,
        cgroup: &str,
    ) {
        let c = classify(path).unwrap_or_else(|| panic!("no container in {path}"));
        assert_eq!(c.identity.runtime, runtime, "{path}");
        assert_eq!(c.identity.container_id, id, "{path}");
        assert_eq!(c.identity.pod_uid.as_deref(), pod, "{path}");
        assert_eq!(c.identity.qos, qos, "{path}");
        assert_eq!(c.identity.name, id, "{path}");
        assert_eq!(c.cgroup, cgroup, "{path}");
    }

    // ---- cgroup v1, kubelet cgroupfs driver

    #[test]
    fn cgroupfs_burstable() {
        let p = "/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/17db96a24ae1e9dd57143e62b1cb0d2d35e693c65c774c7470e87b0572e07c1a";
        check(
            p,
            Runtime::Containerd,
            "17db96a24ae1e9dd57143e62b1cb0d2d35e693c65c774c7470e87b0572e07c1a",
            Some("6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e"),
            Some(QosClass::Burstable),
            p,
        );
        assert!(classify(p).unwrap().runtime_guessed);
    }

    #[test]
    fn cgroupfs_besteffort_with_child() {
        let c = "/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/671a50f5d60566556912f61511d0ec9e4d5c78d53fbc4676727180438bbbbc55";
        check(
            &format!("{c}/kube-proxy"),
            Runtime::Containerd,
            "671a50f5d60566556912f61511d0ec9e4d5c78d53fbc4676727180438bbbbc55",
            Some("0d08203e-255a-11e9-8cd9-0007cb0b2cc8"),
            Some(QosClass::BestEffort),
            c,
        );
    }

    #[test]
    fn cgroupfs_guaranteed() {
        let p = "/kubepods/poda38c12e8-255a-11e9-8cd9-0007cb0b2cc8/32c562ed81a2622b37b80cb216859820ba51bd694f60ee4cf10d07a4011266f8";
        check(
            p,
            Runtime::Containerd,
            "32c562ed81a2622b37b80cb216859820ba51bd694f60ee4cf10d07a4011266f8",
            Some("a38c12e8-255a-11e9-8cd9-0007cb0b2cc8"),
            Some(QosClass::Guaranteed),
            p,
        );
    }

    #[test]
    fn cgroupfs_static_pod_hash_uid() {
        // the fixture list truncates this id; any 64-hex id stands for it
        let id = format!("d166c619{}", "0".repeat(56));
        let p = format!("/kubepods/burstable/pod9729a196c4723b60ab401eaff722982d/{id}");
        check(
            &p,
            Runtime::Containerd,
            &id,
            Some("9729a196c4723b60ab401eaff722982d"),
            Some(QosClass::Burstable),
            &p,
        );
    }

    #[test]
    fn cgroupfs_crio() {
        let p = "/kubepods/poda48c12e8-255a-11e9-8cd9-0007cb0b2cc8/crio-63425c4a8b4291744a79dd9011fddc7a1f8ffda61f65d72196aa01d00cae2e2e";
        check(
            p,
            Runtime::Crio,
            "63425c4a8b4291744a79dd9011fddc7a1f8ffda61f65d72196aa01d00cae2e2e",
            Some("a48c12e8-255a-11e9-8cd9-0007cb0b2cc8"),
            Some(QosClass::Guaranteed),
            p,
        );
        assert!(!classify(p).unwrap().runtime_guessed);
    }

    #[test]
    fn captured_hybrid_fixture_path() {
        // the container-like cgroup of captured-linux-6.18-hybrid
        let p = "/kubepods/burstable/pod3f0e2b1a-77c4-4d7e-9a51-6c2d8e9f0a12/35f0ce87f0997160a8e4c8b66d662371d12daa0b5f3400aac68acde466c27fcd";
        check(
            p,
            Runtime::Containerd,
            "35f0ce87f0997160a8e4c8b66d662371d12daa0b5f3400aac68acde466c27fcd",
            Some("3f0e2b1a-77c4-4d7e-9a51-6c2d8e9f0a12"),
            Some(QosClass::Burstable),
            p,
        );
    }

    // ---- systemd driver (cgroup v2 or v1)

    #[test]
    fn systemd_besteffort_docker() {
        let p = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/docker-73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd.scope";
        check(
            p,
            Runtime::Docker,
            "73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd",
            Some("8712f785-1a3e-41ec-a00b-e2dcc77431cb"),
            Some(QosClass::BestEffort),
            p,
        );
    }

    #[test]
    fn systemd_burstable_crio() {
        let p = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2942c55e_c9cb_428a_93f4_eaf89c1f3ce0.slice/crio-49f9e8e5395d57c1083996c09e2e6f042d5fe1ec0310facab32f94912b35ce59.scope";
        check(
            p,
            Runtime::Crio,
            "49f9e8e5395d57c1083996c09e2e6f042d5fe1ec0310facab32f94912b35ce59",
            Some("2942c55e-c9cb-428a-93f4-eaf89c1f3ce0"),
            Some(QosClass::Burstable),
            p,
        );
    }

    #[test]
    fn systemd_crio_with_container_child() {
        let c = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podea19ff5d_943a_4466_a07e_a71e9e50cc62.slice/crio-21572039dd8398ff8272b031fa5422a40165145ab37f2f8794e1e7f844fe8118.scope";
        check(
            &format!("{c}/container"),
            Runtime::Crio,
            "21572039dd8398ff8272b031fa5422a40165145ab37f2f8794e1e7f844fe8118",
            Some("ea19ff5d-943a-4466-a07e-a71e9e50cc62"),
            Some(QosClass::Burstable),
            c,
        );
    }

    #[test]
    fn systemd_containerd_static_pod_without_scope_suffix() {
        let p = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3e61c214bc3ed9ff81e21474dd6cba17.slice/cri-containerd-c74b0f5062f0bc726cae1e9369ad4a95deed6b298d247f0407475adb23fa3190";
        check(
            p,
            Runtime::Containerd,
            "c74b0f5062f0bc726cae1e9369ad4a95deed6b298d247f0407475adb23fa3190",
            Some("3e61c214bc3ed9ff81e21474dd6cba17"),
            Some(QosClass::Burstable),
            p,
        );
    }

    #[test]
    fn systemd_containerd_scope() {
        let id = id64('e');
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2942c55e_c9cb_428a_93f4_eaf89c1f3ce0.slice/cri-containerd-{id}.scope"
        );
        check(
            &p,
            Runtime::Containerd,
            &id,
            Some("2942c55e-c9cb-428a-93f4-eaf89c1f3ce0"),
            Some(QosClass::Burstable),
            &p,
        );
    }

    #[test]
    fn systemd_guaranteed_docker_and_crio() {
        for (prefix, rt) in [("docker", Runtime::Docker), ("crio", Runtime::Crio)] {
            let id = id64('7');
            let p = format!(
                "/kubepods.slice/kubepods-pod0d08203e_255a_11e9_8cd9_0007cb0b2cc8.slice/{prefix}-{id}.scope"
            );
            check(
                &p,
                rt,
                &id,
                Some("0d08203e-255a-11e9-8cd9-0007cb0b2cc8"),
                Some(QosClass::Guaranteed),
                &p,
            );
        }
    }

    #[test]
    fn systemd_with_kubelet_cgroup_root_prefix() {
        let id = id64('1');
        let p = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod0d08203e_255a_11e9_8cd9_0007cb0b2cc8.slice/cri-containerd-{id}.scope"
        );
        check(
            &p,
            Runtime::Containerd,
            &id,
            Some("0d08203e-255a-11e9-8cd9-0007cb0b2cc8"),
            Some(QosClass::BestEffort),
            &p,
        );
    }

    #[test]
    fn systemd_cgroups_path_form_in_name_systemd_hierarchy() {
        let p = "/system.slice/containerd.service/kubepods-burstable-pod4ed02c0b_0df8_4d14_a30e_fd589ee4143a.slice:cri-containerd:d4a9f9195eaf7e4a729f24151101e1de61f1398677e7b82acfb936dff0b4ce55";
        check(
            p,
            Runtime::Containerd,
            "d4a9f9195eaf7e4a729f24151101e1de61f1398677e7b82acfb936dff0b4ce55",
            Some("4ed02c0b-0df8-4d14-a30e-fd589ee4143a"),
            Some(QosClass::Burstable),
            p,
        );
    }

    #[test]
    fn relative_path_from_inside_a_cgroup_namespace() {
        let p = "/../../../../system.slice/docker-ba7b10d15d16e10e3de7a2dcd408a3d971169ae303f46cfad4c5453c6326fee2.scope";
        check(
            p,
            Runtime::Docker,
            "ba7b10d15d16e10e3de7a2dcd408a3d971169ae303f46cfad4c5453c6326fee2",
            None,
            None,
            p,
        );
        assert_eq!(classify("/../../.."), None);
    }

    // ---- outside Kubernetes

    #[test]
    fn plain_docker_cgroupfs_and_systemd() {
        let p = "/docker/b43d92bf1e5c6f78bb9b7bc6f40721280299855ba692092716e3a1b6c0b86f3f";
        check(
            p,
            Runtime::Docker,
            "b43d92bf1e5c6f78bb9b7bc6f40721280299855ba692092716e3a1b6c0b86f3f",
            None,
            None,
            p,
        );
        let p = "/system.slice/docker-cf87ba651579c9231db817909e7865e5747bd7abcac0c57ce23cf4abbaee046b.scope";
        check(
            p,
            Runtime::Docker,
            "cf87ba651579c9231db817909e7865e5747bd7abcac0c57ce23cf4abbaee046b",
            None,
            None,
            p,
        );
    }

    #[test]
    fn podman() {
        let a = id64('a');
        let p = format!("/machine.slice/libpod-{a}.scope");
        check(&p, Runtime::Podman, &a, None, None, &p);
        // rootless, under a user's service manager: still a container
        let b = id64('b');
        let p = format!("/user.slice/user-1000.slice/user@1000.service/libpod-{b}.scope");
        check(&p, Runtime::Podman, &b, None, None, &p);
        // the payload inside a service: the container, not the service
        let c = id64('c');
        let p = format!("/system.slice/myapp.service/libpod-payload-{c}");
        check(&p, Runtime::Podman, &c, None, None, &p);
        // podman's monitor is not a container
        assert_eq!(
            classify(&format!("/machine.slice/libpod-conmon-{a}.scope")),
            None
        );
    }

    #[test]
    fn systemd_services() {
        let c = classify("/system.slice/docker.service").unwrap();
        assert_eq!(c.identity.runtime, Runtime::Systemd);
        assert_eq!(c.identity.name, "docker.service");
        assert_eq!(c.identity.container_id, "");
        assert_eq!(c.identity.pod_uid, None);
        assert_eq!(c.identity.qos, None);
        assert_eq!(c.cgroup, "/system.slice/docker.service");

        // a child of the service is cut off
        let c = classify("/system.slice/ssh.service/sub").unwrap();
        assert_eq!(c.identity.name, "ssh.service");
        assert_eq!(c.cgroup, "/system.slice/ssh.service");

        // template instances live in sub-slices; names are unescaped
        let c = classify(r"/system.slice/system-serial\x2dgetty.slice/serial-getty@ttyS0.service")
            .unwrap();
        assert_eq!(c.identity.name, "serial-getty@ttyS0.service");
        let c = classify(r"/system.slice/system-systemd\x2dfsck.slice/systemd-fsck@dev-disk-by\x2dlabel-root.service").unwrap();
        assert_eq!(
            c.identity.name,
            "systemd-fsck@dev-disk-by-label-root.service"
        );
    }

    #[test]
    fn negatives() {
        for p in [
            "",
            "/",
            "/kubepods",
            "/kubepods/burstable",
            "/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e",
            "/kubepods/poda38c12e8-255a-11e9-8cd9-0007cb0b2cc8",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2942c55e_c9cb_428a_93f4_eaf89c1f3ce0.slice",
            "/user.slice",
            "/user.slice/user-1000.slice/user@1000.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice",
            r"/system.slice/system-serial\x2dgetty.slice",
            "/init.scope",
            "/lxc/mysql-primary-db",
            "/podruntime/runtime",
            "/docker",
            "/docker/not-an-id",
            // an id that is not under a pod or docker directory
            "/b43d92bf1e5c6f78bb9b7bc6f40721280299855ba692092716e3a1b6c0b86f3f",
            // ids of the wrong length or case
            "/docker/b43d92bf1e5c6f78",
            "/docker/B43D92BF1E5C6F78BB9B7BC6F40721280299855BA692092716E3A1B6C0B86F3F",
            // runtime monitors
            "/kubepods.slice/kubepods-pod0d08203e_255a_11e9_8cd9_0007cb0b2cc8.slice/crio-conmon-21572039dd8398ff8272b031fa5422a40165145ab37f2f8794e1e7f844fe8118.scope",
            // a pod directory not under kubepods
            "/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/17db96a24ae1e9dd57143e62b1cb0d2d35e693c65c774c7470e87b0572e07c1a",
            // an unknown prefix in the cgroupsPath form
            "/system.slice/x.service/kubepods-pod0d08203e_255a_11e9_8cd9_0007cb0b2cc8.slice:runc:d4a9f9195eaf7e4a729f24151101e1de61f1398677e7b82acfb936dff0b4ce55",
        ] {
            let c = classify(p);
            // the last one falls back to its enclosing service; nothing else matches
            if p.contains(":runc:") {
                assert_eq!(c.unwrap().identity.name, "x.service", "{p}");
            } else {
                assert_eq!(c, None, "{p}");
            }
        }
    }

    #[test]
    fn kind_node_innermost_wins() {
        let node = id64('d');
        let inner = id64('f');
        let pod =
            format!("/docker/{node}/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e");
        // the kind node itself is a docker container
        check(
            &format!("/docker/{node}"),
            Runtime::Docker,
            &node,
            None,
            None,
            &format!("/docker/{node}"),
        );
        // a pod inside it is not a container (either driver)
        assert_eq!(classify(&pod), None);
        assert_eq!(
            classify(&format!(
                "/system.slice/docker-{node}.scope/kubelet.slice/kubelet-kubepods.slice"
            )),
            None
        );
        // a container in that pod is the inner container
        let p = format!("{pod}/{inner}");
        check(
            &p,
            Runtime::Containerd,
            &inner,
            Some("6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e"),
            Some(QosClass::Burstable),
            &p,
        );
    }

    #[test]
    fn proc_cgroup_lines() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/proc_pid_cgroup/coroot-node-agent/proc/400/cgroup"
        ))
        .unwrap();
        let (controllers, path) = split_proc_cgroup_line(text.lines().next().unwrap()).unwrap();
        assert_eq!(controllers, "");
        let c = classify(path).unwrap();
        assert_eq!(c.identity.runtime, Runtime::Docker);
        assert_eq!(
            c.identity.pod_uid.as_deref(),
            Some("8712f785-1a3e-41ec-a00b-e2dcc77431cb")
        );
        let (controllers, path) = split_proc_cgroup_line(
            "3:cpu,cpuacct:/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/17db96a24ae1e9dd57143e62b1cb0d2d35e693c65c774c7470e87b0572e07c1a",
        )
        .unwrap();
        assert_eq!(controllers, "cpu,cpuacct");
        assert!(path.starts_with("/kubepods/burstable/"));
        let (_, path) = split_proc_cgroup_line(
            "1:name=systemd:/system.slice/containerd.service/kubepods-pod4ed02c0b_0df8_4d14_a30e_fd589ee4143a.slice:cri-containerd:d4a9f9195eaf7e4a729f24151101e1de61f1398677e7b82acfb936dff0b4ce55",
        )
        .unwrap();
        assert_eq!(
            classify(path).unwrap().identity.qos,
            Some(QosClass::Guaranteed)
        );
        assert_eq!(split_proc_cgroup_line("garbage"), None);
        assert_eq!(split_proc_cgroup_line("x:cpu:/"), None);
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_unit(r"a\x2db"), "a-b");
        assert_eq!(unescape_unit(r"a\x2"), r"a\x2");
        assert_eq!(unescape_unit(r"\xzz\x40"), r"\xzz@");
        assert_eq!(unescape_unit(r"\xff"), r"\xff");
    }
}
