//! Disk use of a node and which images a prune removes (SPEC §11).
//!
//! A node's disk is the filesystem of its engine's data root (`DockerRootDir`): `df` of that
//! path tells how full it is, the engine's `system df` what it stores there (images,
//! containers' layers, volumes, build cache). [`measure`] asks both; everything else here is a
//! pure decision over what it returned:
//!
//! - [`NodeDisk::used_hundredths`]: how full the node is — the filesystem's share when `df`
//!   answered, else what the engine stores over the node's declared `capacity.disk`, else
//!   unknown (and nothing is pruned);
//! - [`Keep::of`]: the images the applied manifests name (by tag and by the digest the fleet
//!   runs), which are never removed, even when no container uses them yet;
//! - [`prune_plan`]: the images to remove from a node above the watermark — those no container
//!   uses (any container: the fleet's, another fleet's, the operator's own) and [`Keep`] does
//!   not hold, oldest first, until the estimate falls under the watermark.
//!
//! The controller acts on the plan ([`crate::controller`]); the engine refuses to remove an
//! image a container uses, so a container created between the measurement and the removal
//! keeps its image.
//!
//! `get nodes`, `describe node` and `capacity` show what [`measure_all`] found as a
//! [`DiskStatus`] each, in the words of [`DiskStatus::text`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::container::{EngineDisk, Filesystem, ImageUsage, pinned};
use crate::manifest::quantity::{Bytes, Percent};
use crate::manifest::spec::DesiredFleet;
use crate::observe::{NodeObservation, ObservedFleet};
use crate::transport::{NodeRuntime, TransportError};

/// What one node's disk holds, as [`measure`] found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeDisk {
    /// The engine's data root, e.g. `/var/lib/docker`.
    pub data_root: String,
    /// Its filesystem, when `df` answered.
    pub filesystem: Option<Filesystem>,
    /// Why `df` did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem_error: Option<String>,
    /// What the engine stores.
    pub engine: EngineDisk,
    /// The node's declared `capacity.disk`, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<u64>,
}

impl NodeDisk {
    /// Share of the disk in use, in hundredths of a percent: the data root filesystem's (as `df`
    /// shows it) when measured; else what the engine stores over the declared capacity; else
    /// `None`.
    pub fn used_hundredths(&self) -> Option<u32> {
        if let Some(fs) = &self.filesystem {
            return Some(fs.used_hundredths());
        }
        let declared = self.declared.filter(|d| *d > 0)?;
        Some(
            (u128::from(self.engine.total()) * 10_000)
                .div_ceil(u128::from(declared))
                .min(10_000) as u32,
        )
    }

    /// The share in use once `freed` more bytes are free, as [`Self::used_hundredths`].
    fn used_after(&self, freed: u64) -> Option<u32> {
        let mut after = self.clone();
        match after.filesystem.as_mut() {
            Some(fs) => {
                fs.used = fs.used.saturating_sub(freed);
                fs.available = fs.available.saturating_add(freed);
            }
            None => after.engine.images_bytes = after.engine.images_bytes.saturating_sub(freed),
        }
        after.used_hundredths()
    }

    /// Size of the disk the share is of: the filesystem's, else the declared capacity.
    pub fn size(&self) -> Option<u64> {
        self.filesystem.map(|f| f.size).or(self.declared)
    }

    /// Bytes in use on that disk: the filesystem's, else what the engine stores.
    pub fn used(&self) -> Option<u64> {
        match (&self.filesystem, self.declared) {
            (Some(f), _) => Some(f.used),
            (None, Some(_)) => Some(self.engine.total()),
            (None, None) => None,
        }
    }
}

/// Measures `rt`'s disk: the engine's data root and `system df`, then `df` of the data root.
/// `declared` is the node's `capacity.disk`.
///
/// # Errors
/// The engine did not answer `/info` or `system df`. A `df` that fails (an SSH account that
/// may not run commands) is not an error: [`NodeDisk::filesystem_error`] says why.
pub async fn measure(
    rt: &dyn NodeRuntime,
    declared: Option<u64>,
) -> Result<NodeDisk, TransportError> {
    let mut d = measure_filesystem(rt, declared).await?;
    d.engine = rt.disk_usage().await?;
    Ok(d)
}

/// [`measure`] without the engine's `system df` (which walks the data root): the data root
/// and its filesystem only, enough to tell a node under its watermark.
///
/// # Errors
/// The engine did not answer `/info`.
pub async fn measure_filesystem(
    rt: &dyn NodeRuntime,
    declared: Option<u64>,
) -> Result<NodeDisk, TransportError> {
    let info = rt.engine_info().await?;
    let engine = EngineDisk::default();
    let data_root = if info.docker_root_dir.is_empty() {
        "/var/lib/docker".to_string()
    } else {
        info.docker_root_dir
    };
    let (filesystem, filesystem_error) = match rt.filesystem(&data_root).await {
        Ok(fs) => (Some(fs), None),
        Err(e) => (None, Some(e.message.clone())),
    };
    Ok(NodeDisk {
        data_root,
        filesystem,
        filesystem_error,
        engine,
        declared,
    })
}

/// How long [`measure_all`] waits for one node's disk. `system df` walks the engine's data
/// root (the engine call itself may take [`crate::transport::docker::DF_TIMEOUT`]); a command
/// that shows the disk beside other facts does not wait that long for one slow node.
pub const MEASURE_ALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Measures, concurrently, the disk of every node of `fleet` that has a runtime in `runtimes`
/// and that `observed` shows reachable (a node that did not answer the observation is not asked
/// again: it would only cost another connect timeout). One [`measure`] per node, with the
/// node's declared `capacity.disk`, each given at most [`MEASURE_ALL_TIMEOUT`].
///
/// Each node measured maps to its [`NodeDisk`], or to why the engine did not answer (the
/// operation and its cause, without the node's name: the key says it).
pub async fn measure_all(
    fleet: &DesiredFleet,
    runtimes: &crate::execute::Runtimes,
    observed: &ObservedFleet,
) -> BTreeMap<String, Result<NodeDisk, String>> {
    let checks = fleet.nodes.values().filter_map(|spec| {
        let reachable = matches!(
            observed.nodes.get(&spec.name),
            Some(NodeObservation::Reachable { .. })
        );
        let rt = runtimes.get(&spec.name).filter(|_| reachable)?.clone();
        let declared = spec.capacity_disk.map(|b| b.0);
        Some(async move {
            let measured =
                match tokio::time::timeout(MEASURE_ALL_TIMEOUT, measure(rt.as_ref(), declared))
                    .await
                {
                    Ok(m) => m.map_err(|e| cause(&e)),
                    Err(_) => Err(format!(
                        "no answer within {} s",
                        MEASURE_ALL_TIMEOUT.as_secs()
                    )),
                };
            (spec.name.clone(), measured)
        })
    });
    crate::observe::on_nodes(checks).await.into_iter().collect()
}

/// `e` without the node's name: `system df: <message>`.
fn cause(e: &TransportError) -> String {
    match &e.object {
        Some(object) => format!("{} {object}: {}", e.op, e.message),
        None => format!("{}: {}", e.op, e.message),
    }
}

/// One node's disk as `get nodes`, `describe node` and `capacity` show it: how full the data
/// root's filesystem is and what the engine stores there, counted (not the image list).
///
/// A field the measurement did not give is `None`: the engine's figures when the engine did
/// not answer `system df`, the share and sizes when neither `df` nor a declared
/// `capacity.disk` gave the disk's size.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct DiskStatus {
    /// The engine's data root, e.g. `/var/lib/docker`.
    pub data_root: Option<String>,
    /// Share of the disk in use, percent (`41.3`), as [`NodeDisk::used_hundredths`] judges it.
    pub used_percent: Option<f64>,
    /// Bytes in use ([`NodeDisk::used`]).
    pub used_bytes: Option<u64>,
    /// Size of the disk ([`NodeDisk::size`]): the filesystem's, else the declared capacity.
    pub size_bytes: Option<u64>,
    /// Whether the share is of the declared `capacity.disk` (`df` did not answer).
    pub declared: bool,
    /// Image layers, counted once.
    pub images_bytes: Option<u64>,
    /// Containers' writable layers.
    pub containers_bytes: Option<u64>,
    /// Local volumes.
    pub volumes_bytes: Option<u64>,
    /// Build cache.
    pub build_cache_bytes: Option<u64>,
    /// Images the engine holds.
    pub images: Option<usize>,
    /// Of which no container (of any owner, in any state) uses.
    pub unused_images: Option<usize>,
    /// The fleet's `diskHighWatermark`, percent.
    pub watermark_percent: Option<f64>,
    /// Why the disk is not fully measured: the engine's `system df` (nothing is known), or `df`
    /// of the data root (the share is of the declared capacity, or unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DiskStatus {
    /// The status of a node whose disk [`measure`] found as `d`, judged against `watermark`.
    pub fn of(d: &NodeDisk, watermark: Option<Percent>) -> DiskStatus {
        let e = &d.engine;
        DiskStatus {
            data_root: Some(d.data_root.clone()),
            used_percent: d.used_hundredths().map(percent),
            used_bytes: d.used(),
            size_bytes: d.size(),
            declared: d.filesystem.is_none() && d.declared.is_some(),
            images_bytes: Some(e.images_bytes),
            containers_bytes: Some(e.containers_bytes),
            volumes_bytes: Some(e.volumes_bytes),
            build_cache_bytes: Some(e.build_cache_bytes),
            images: Some(e.images.len()),
            unused_images: Some(e.images.iter().filter(|i| i.containers == 0).count()),
            watermark_percent: watermark.map(|w| percent(w.0)),
            error: d
                .filesystem_error
                .as_ref()
                .map(|m| format!("df {}: {m}", d.data_root)),
        }
    }

    /// The status of a node whose engine did not answer: only `error` (and the watermark).
    pub fn failed(error: impl Into<String>, watermark: Option<Percent>) -> DiskStatus {
        DiskStatus {
            watermark_percent: watermark.map(|w| percent(w.0)),
            error: Some(error.into()),
            ..DiskStatus::default()
        }
    }

    /// [`Self::of`] or [`Self::failed`], from one entry of [`measure_all`].
    pub fn from_measured(measured: &Result<NodeDisk, String>, watermark: Option<Percent>) -> Self {
        match measured {
            Ok(d) => DiskStatus::of(d, watermark),
            Err(e) => DiskStatus::failed(e.clone(), watermark),
        }
    }

    /// Whether the share in use is known and above the watermark (the controller prunes then).
    pub fn above_watermark(&self) -> bool {
        matches!(
            (self.used_percent, self.watermark_percent),
            (Some(u), Some(w)) if hundredths(u) > hundredths(w)
        )
    }

    /// The share in use as [`percent_text`] writes it (`41.3%`), when known.
    pub fn used_text(&self) -> Option<String> {
        self.used_percent.map(|u| percent_text(hundredths(u)))
    }

    /// The watermark as [`percent_text`] writes it (`80%`), when the fleet sets one.
    pub fn watermark_text(&self) -> Option<String> {
        self.watermark_percent.map(|w| percent_text(hundredths(w)))
    }

    /// The share in use for a table: `41.3% of 30GiB`, `85% of 30GiB (> 80%)` above the
    /// watermark, `?` when unknown.
    pub fn text(&self) -> String {
        let Some(mut out) = self.used_text() else {
            return "?".into();
        };
        if let Some(size) = self.size_bytes {
            out.push_str(&format!(" of {}", Bytes(size)));
        }
        if let Some(w) = self.watermark_text().filter(|_| self.above_watermark()) {
            out.push_str(&format!(" (> {w})"));
        }
        out
    }

    /// The line a table prints under itself for `node` when its share in use is unknown and
    /// there is a reason: `node1: disk unknown: df /var/lib/docker: …`.
    pub fn unknown_note(&self, node: &str) -> Option<String> {
        let e = self
            .error
            .as_ref()
            .filter(|_| self.used_percent.is_none())?;
        Some(format!("{node}: disk unknown: {e}"))
    }

    /// The images for a table: `1.2GiB (3 unused)`, `?` when the engine did not answer.
    pub fn images_text(&self) -> String {
        match (self.images_bytes, self.unused_images) {
            (Some(b), Some(u)) => format!("{} ({u} unused)", Bytes(b)),
            _ => "?".into(),
        }
    }
}

/// Hundredths of a percent as a percent (`4130` → `41.3`).
fn percent(hundredths: u32) -> f64 {
    f64::from(hundredths) / 100.0
}

/// A percent from [`percent`] back in hundredths.
fn hundredths(percent: f64) -> u32 {
    (percent * 100.0).round() as u32
}

/// The image names a prune never removes: every image the applied manifests name, by its tag
/// and by the digest the fleet runs it at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keep {
    names: BTreeSet<String>,
}

impl Keep {
    /// The images of every service and plug class of `desired`, with their pinned digests
    /// ([`DesiredFleet::image_digests`]).
    pub fn of(desired: &DesiredFleet) -> Keep {
        let mut names = BTreeSet::new();
        for image in desired.images().keys() {
            names.insert(familiar(image));
            if let Some(digest) = desired.image_digests.get(*image).filter(|d| !d.is_empty()) {
                names.insert(familiar(&pinned(image, digest)));
            }
        }
        Keep { names }
    }

    /// Also keeps `images` (tag → digest, `""` for none): those of the newest revisions
    /// ([`crate::revisions::kept_images`]), so a rollback to one of them needs no pull.
    pub fn with_images(mut self, images: impl IntoIterator<Item = (String, String)>) -> Keep {
        for (image, digest) in images {
            self.names.insert(familiar(&image));
            if !digest.is_empty() {
                self.names.insert(familiar(&pinned(&image, &digest)));
            }
        }
        self
    }

    /// Whether any name of `image` (tag or digest) is kept.
    pub fn keeps(&self, image: &ImageUsage) -> bool {
        image
            .tags
            .iter()
            .chain(&image.digests)
            .any(|n| self.names.contains(&familiar(n)))
    }
}

/// `reference` as the engine lists it: Docker Hub's host and `library/` dropped, `:latest`
/// added to a name with neither tag nor digest (`docker.io/library/redis` → `redis:latest`).
pub fn familiar(reference: &str) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let name = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|h| name.strip_prefix(h))
        .map_or(name, |rest| rest.strip_prefix("library/").unwrap_or(rest));
    // Podman names an image loaded or imported without a registry `localhost/NAME`.
    let name = name.strip_prefix("localhost/").unwrap_or(name);
    match digest {
        Some(d) => format!("{name}@{d}"),
        None => {
            let last = name.rsplit('/').next().unwrap_or(name);
            if last.contains(':') {
                name.to_string()
            } else {
                format!("{name}:latest")
            }
        }
    }
}

/// One image a prune removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The image.
    pub image: ImageUsage,
    /// What to ask the engine to remove, in order: each tag (the last one removes the image),
    /// or the id of an image without tags.
    pub names: Vec<String>,
}

impl Removal {
    /// How the image is named in events: its first tag, else its short id.
    pub fn label(&self) -> String {
        self.image
            .tags
            .first()
            .cloned()
            .unwrap_or_else(|| short_id(&self.image.id))
    }

    /// Bytes its removal frees (what it does not share with other images).
    pub fn bytes(&self) -> u64 {
        Self::freed_by(&self.image)
    }

    /// Bytes removing `image` frees.
    pub fn freed_by(image: &ImageUsage) -> u64 {
        image.size.saturating_sub(image.shared_size)
    }
}

/// `sha256:0123456789ab…` → `sha256:0123456789ab`.
fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

/// What to remove from a node whose disk is `disk` when `watermark` is its limit: nothing when
/// it is at or under the watermark (or its use is unknown); else the images that no container
/// uses and `keep` does not hold, oldest first, until the estimated use (each removal frees
/// its unshared bytes) is under the watermark or none is left.
pub fn prune_plan(disk: &NodeDisk, watermark: Percent, keep: &Keep) -> Vec<Removal> {
    let Some(used) = disk.used_hundredths() else {
        return Vec::new();
    };
    if used <= watermark.0 {
        return Vec::new();
    }
    let mut candidates: Vec<&ImageUsage> = disk
        .engine
        .images
        .iter()
        .filter(|i| {
            i.containers == 0
                && !keep.keeps(i)
                // Removing an image whose layers all belong to others frees nothing; fleetctl's
                // own record image is tiny and needed again at the next lease.
                && Removal::freed_by(i) > 0
                && !i.tags.iter().any(|t| t == crate::records::IMAGE)
        })
        .collect();
    candidates.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    let mut out = Vec::new();
    let mut freed = 0u64;
    for image in candidates {
        if disk.used_after(freed).is_some_and(|u| u <= watermark.0) {
            break;
        }
        let names = if image.tags.is_empty() {
            vec![image.id.clone()]
        } else {
            image.tags.clone()
        };
        let removal = Removal {
            image: image.clone(),
            names,
        };
        freed = freed.saturating_add(removal.bytes());
        out.push(removal);
    }
    out
}

/// `hundredths` as a percentage for people: `83.4%`, `80%`.
pub fn percent_text(hundredths: u32) -> String {
    if hundredths.is_multiple_of(100) {
        format!("{}%", hundredths / 100)
    } else {
        format!("{:.1}%", f64::from(hundredths) / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn image(id: &str, tags: &[&str], size: u64, created: i64, containers: u64) -> ImageUsage {
        ImageUsage {
            id: format!("sha256:{id}"),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            digests: Vec::new(),
            size,
            shared_size: 0,
            created,
            containers,
        }
    }

    fn disk(used: u64, available: u64, images: Vec<ImageUsage>) -> NodeDisk {
        NodeDisk {
            data_root: "/var/lib/docker".into(),
            filesystem: Some(Filesystem {
                size: used + available,
                used,
                available,
            }),
            engine: EngineDisk {
                images,
                ..EngineDisk::default()
            },
            ..NodeDisk::default()
        }
    }

    fn keep(names: &[&str]) -> Keep {
        Keep {
            names: names.iter().map(|n| familiar(n)).collect(),
        }
    }

    fn removed(plan: &[Removal]) -> Vec<String> {
        plan.iter().map(Removal::label).collect()
    }

    #[test]
    fn under_the_watermark_nothing_is_removed() {
        let d = disk(70 * GIB, 30 * GIB, vec![image("a", &["old:1"], GIB, 1, 0)]);
        assert!(prune_plan(&d, Percent(8000), &Keep::default()).is_empty());
    }

    #[test]
    fn used_images_and_kept_images_stay_and_the_oldest_unused_go_first() {
        let d = disk(
            85 * GIB,
            15 * GIB,
            vec![
                image("run", &["app:2"], 2 * GIB, 1, 1),
                image("kept", &["redis:7"], 2 * GIB, 2, 0),
                image("new", &["app:1"], 2 * GIB, 30, 0),
                image("old", &["tool:0"], 2 * GIB, 10, 0),
                image("foreign", &["mine:dev"], 2 * GIB, 3, 1),
            ],
        );
        let plan = prune_plan(&d, Percent(8000), &keep(&["docker.io/library/redis:7"]));
        // 85% → 83% → 81% → (none left that may go)
        assert_eq!(removed(&plan), ["tool:0", "app:1"]);
    }

    #[test]
    fn removal_stops_once_the_estimate_is_under_the_watermark() {
        let d = disk(
            81 * GIB,
            19 * GIB,
            vec![
                image("a", &["a:1"], 2 * GIB, 1, 0),
                image("b", &["b:1"], 2 * GIB, 2, 0),
            ],
        );
        assert_eq!(
            removed(&prune_plan(&d, Percent(8000), &Keep::default())),
            ["a:1"]
        );
    }

    #[test]
    fn a_kept_digest_keeps_an_untagged_image_and_an_untagged_one_goes_by_id() {
        let mut pinned_only = image("pin", &[], GIB, 1, 0);
        pinned_only.digests = vec!["reg.example/app@sha256:aaa".into()];
        let dangling = image("0123456789abcdef", &[], GIB, 2, 0);
        let d = disk(99 * GIB, GIB, vec![pinned_only, dangling]);
        let plan = prune_plan(&d, Percent(5000), &keep(&["reg.example/app@sha256:aaa"]));
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].names, ["sha256:0123456789abcdef"]);
        assert_eq!(plan[0].label(), "sha256:0123456789ab");
    }

    #[test]
    fn every_tag_of_an_image_is_removed_and_one_kept_tag_keeps_it_whole() {
        let d = disk(
            99 * GIB,
            GIB,
            vec![
                image("two", &["x:1", "x:latest"], GIB, 1, 0),
                image("half", &["y:1", "y:2"], GIB, 2, 0),
            ],
        );
        let plan = prune_plan(&d, Percent(5000), &keep(&["y:2"]));
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].names, ["x:1", "x:latest"]);
    }

    #[test]
    fn without_df_the_declared_capacity_is_the_disk_and_without_either_nothing_is_pruned() {
        let mut d = disk(0, 0, vec![image("a", &["a:1"], 9 * GIB, 1, 0)]);
        d.filesystem = None;
        d.engine.images_bytes = 9 * GIB;
        assert_eq!(d.used_hundredths(), None);
        assert!(prune_plan(&d, Percent(100), &Keep::default()).is_empty());
        d.declared = Some(10 * GIB);
        assert_eq!(d.used_hundredths(), Some(9000));
        assert_eq!(
            removed(&prune_plan(&d, Percent(8000), &Keep::default())),
            ["a:1"]
        );
    }

    #[test]
    fn an_image_that_frees_nothing_and_the_record_image_are_never_candidates() {
        let mut shared = image("base", &["base:1"], GIB, 1, 0);
        shared.shared_size = GIB;
        let d = disk(
            99 * GIB,
            GIB,
            vec![
                shared,
                image("rec", &[crate::records::IMAGE], GIB, 2, 0),
                image("old", &["old:1"], GIB, 3, 0),
            ],
        );
        assert_eq!(
            removed(&prune_plan(&d, Percent(5000), &Keep::default())),
            ["old:1"]
        );
    }

    #[test]
    fn familiar_names_match_the_engines_spelling() {
        assert_eq!(familiar("redis"), "redis:latest");
        assert_eq!(familiar("docker.io/library/redis:7"), "redis:7");
        assert_eq!(familiar("docker.io/bitnami/redis:7"), "bitnami/redis:7");
        assert_eq!(familiar("10.0.0.5:5000/app"), "10.0.0.5:5000/app:latest");
        assert_eq!(familiar("10.0.0.5:5000/app:2"), "10.0.0.5:5000/app:2");
        assert_eq!(
            familiar("docker.io/library/redis@sha256:abc"),
            "redis@sha256:abc"
        );
        // Podman's spelling of an image without a registry.
        assert_eq!(
            familiar("localhost/fleet-test/busybox:1"),
            "fleet-test/busybox:1"
        );
        assert_eq!(familiar("localhost:5000/app:1"), "localhost:5000/app:1");
    }

    #[test]
    fn the_keep_set_holds_every_manifest_image_and_its_pinned_digest() {
        let text = "apiVersion: fleet/v1\nkind: Node\nmetadata: {name: n1}\nspec: {capacity: {cpus: 4, memory: 8GiB}}\n---\napiVersion: fleet/v1\nkind: Service\nmetadata: {name: web}\nspec: {image: 'reg.example/web:2', resources: {memory: 16MiB}}\n";
        let mut fleet = crate::manifest::parse(&[crate::manifest::Source {
            name: "t.yaml".into(),
            text: text.into(),
        }])
        .unwrap()
        .fleet;
        fleet
            .image_digests
            .insert("reg.example/web:2".into(), "sha256:beef".into());
        let k = Keep::of(&fleet);
        let mut by_digest = image("x", &[], 1, 1, 0);
        by_digest.digests = vec!["reg.example/web@sha256:beef".into()];
        assert!(k.keeps(&by_digest));
        assert!(k.keeps(&image("y", &["reg.example/web:2"], 1, 1, 0)));
        assert!(!k.keeps(&image("z", &["reg.example/web:1"], 1, 1, 0)));
        // An earlier revision's image, by tag and by the digest it ran as.
        let k = k.with_images([
            ("reg.example/web:1".to_string(), "sha256:cafe".to_string()),
            ("redis:6".to_string(), String::new()),
        ]);
        assert!(k.keeps(&image("z", &["reg.example/web:1"], 1, 1, 0)));
        let mut old_digest = image("w", &[], 1, 1, 0);
        old_digest.digests = vec!["reg.example/web@sha256:cafe".into()];
        assert!(k.keeps(&old_digest));
        assert!(k.keeps(&image("r", &["docker.io/library/redis:6"], 1, 1, 0)));
        assert!(!k.keeps(&image("q", &["redis:5"], 1, 1, 0)));
    }

    fn measured() -> NodeDisk {
        let mut d = disk(
            12_390 * (GIB / 1000),
            17_610 * (GIB / 1000),
            vec![
                image("run", &["app:2"], GIB, 1, 2),
                image("old", &["app:1"], GIB, 2, 0),
                image("none", &[], GIB, 3, 0),
            ],
        );
        d.engine.images_bytes = 1288 << 20;
        d.engine.containers_bytes = 20 << 20;
        d.engine.volumes_bytes = GIB;
        d
    }

    #[test]
    fn a_disk_status_counts_images_not_lists_them() {
        let st = DiskStatus::of(&measured(), Some(Percent(8000)));
        assert_eq!(st.data_root.as_deref(), Some("/var/lib/docker"));
        assert_eq!(st.used_percent, Some(41.3));
        assert_eq!(st.size_bytes, Some(30_000 * (GIB / 1000)));
        assert_eq!(st.used_bytes, Some(12_390 * (GIB / 1000)));
        assert!(!st.declared);
        assert_eq!((st.images, st.unused_images), (Some(3), Some(2)));
        assert_eq!(st.images_bytes, Some(1288 << 20));
        assert_eq!(st.volumes_bytes, Some(GIB));
        assert_eq!(st.build_cache_bytes, Some(0));
        assert_eq!(st.watermark_percent, Some(80.0));
        assert_eq!(st.error, None);
        assert!(!st.above_watermark());
        assert_eq!(st.text(), "41.3% of 30GiB");
        assert_eq!(st.images_text(), "1.3GiB (2 unused)");
        assert_eq!(st.unknown_note("node1"), None);
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["used_percent"], 41.3);
        assert_eq!(json["unused_images"], 2);
        assert!(json.get("error").is_none(), "{json}");
        assert!(json.get("images_list").is_none() && !json["images"].is_array());
    }

    #[test]
    fn above_the_watermark_the_text_says_so_and_at_it_does_not() {
        let mut d = disk(85 * GIB, 15 * GIB, Vec::new());
        assert_eq!(
            DiskStatus::of(&d, Some(Percent(8000))).text(),
            "85% of 100GiB (> 80%)"
        );
        assert_eq!(
            DiskStatus::of(&d, Some(Percent(9250))).text(),
            "85% of 100GiB"
        );
        assert_eq!(DiskStatus::of(&d, None).text(), "85% of 100GiB");
        d.filesystem = Some(Filesystem {
            size: 100 * GIB,
            used: 80 * GIB,
            available: 20 * GIB,
        });
        let at = DiskStatus::of(&d, Some(Percent(8000)));
        assert!(!at.above_watermark(), "the controller prunes above, not at");
        assert_eq!(at.text(), "80% of 100GiB");
    }

    #[test]
    fn an_unknown_disk_is_a_question_mark_with_its_reason() {
        let mut d = measured();
        d.filesystem = None;
        d.filesystem_error = Some("this account may not run commands".into());
        let st = DiskStatus::of(&d, Some(Percent(8000)));
        assert_eq!(st.used_percent, None);
        assert_eq!(st.size_bytes, None);
        assert_eq!(st.text(), "?");
        assert_eq!(
            st.images_text(),
            "1.3GiB (2 unused)",
            "the engine still answered"
        );
        assert_eq!(
            st.unknown_note("node1").as_deref(),
            Some("node1: disk unknown: df /var/lib/docker: this account may not run commands")
        );

        // The declared capacity.disk stands in for df: known, and the reason still said.
        d.declared = Some(10 * GIB);
        d.engine.images_bytes = 8 * GIB + GIB / 2;
        let st = DiskStatus::of(&d, Some(Percent(8000)));
        assert!(st.declared);
        assert_eq!(st.text(), "95.2% of 10GiB (> 80%)");
        assert!(st.error.is_some());
        assert_eq!(st.unknown_note("node1"), None);

        let failed = DiskStatus::failed("system df: engine busy", None);
        assert_eq!(failed.text(), "?");
        assert_eq!(failed.images_text(), "?");
        assert_eq!(failed.data_root, None);
        assert_eq!(
            failed.unknown_note("node2").as_deref(),
            Some("node2: disk unknown: system df: engine busy")
        );
    }

    /// One measurement per node that answered the observation; an unreachable node is not
    /// asked again, and an engine that fails is said without repeating the node's name.
    #[tokio::test]
    async fn measure_all_asks_each_reachable_node_once() {
        use crate::transport::fake::FakeRuntime;
        use std::sync::Arc;

        let text = "apiVersion: fleet/v1\nkind: Node\nmetadata: {name: n1}\nspec: {capacity: {cpus: 1, memory: 1GiB, disk: 20GiB}}\n---\napiVersion: fleet/v1\nkind: Node\nmetadata: {name: n2}\nspec: {capacity: {cpus: 1, memory: 1GiB}}\n---\napiVersion: fleet/v1\nkind: Node\nmetadata: {name: n3}\nspec: {capacity: {cpus: 1, memory: 1GiB}}\n";
        let fleet = crate::manifest::parse(&[crate::manifest::Source {
            name: "t.yaml".into(),
            text: text.into(),
        }])
        .unwrap()
        .fleet;
        let n1 = Arc::new(FakeRuntime::new("n1"));
        n1.set_disk(None, vec![image("a", &["a:1"], GIB, 1, 0)]);
        let n2 = Arc::new(FakeRuntime::new("n2"));
        n2.set_disk(
            Some(Filesystem {
                size: 10 * GIB,
                used: 9 * GIB,
                available: GIB,
            }),
            Vec::new(),
        );
        let n3 = Arc::new(FakeRuntime::new("n3"));
        let runtimes: crate::execute::Runtimes = [
            ("n1".to_string(), n1.clone() as Arc<dyn NodeRuntime>),
            ("n2".to_string(), n2.clone() as Arc<dyn NodeRuntime>),
            ("n3".to_string(), n3.clone() as Arc<dyn NodeRuntime>),
        ]
        .into();
        n3.set_unreachable(true);
        let rts: Vec<Arc<dyn NodeRuntime>> = runtimes.values().cloned().collect();
        let observed = crate::observe::observe(
            "demo",
            &rts,
            &crate::observe::ObserveOptions::everything(&fleet),
        )
        .await;
        let measured = measure_all(&fleet, &runtimes, &observed).await;
        assert_eq!(measured.keys().collect::<Vec<_>>(), ["n1", "n2"]);
        let d1 = measured["n1"].as_ref().unwrap();
        assert_eq!(d1.declared, Some(20 * GIB));
        assert!(d1.filesystem_error.is_some());
        assert_eq!(
            measured["n2"].as_ref().unwrap().used_hundredths(),
            Some(9000)
        );

        n2.set_unreachable(true);
        let measured = measure_all(&fleet, &runtimes, &observed).await;
        let e = measured["n2"].as_ref().unwrap_err();
        assert!(!e.contains("n2"), "{e}");
    }

    #[test]
    fn df_percent_rounds_up_like_df() {
        let fs = Filesystem {
            size: 1000,
            used: 801,
            available: 199,
        };
        assert_eq!(fs.used_hundredths(), 8010);
        assert_eq!(percent_text(8010), "80.1%");
        assert_eq!(percent_text(8000), "80%");
    }
}
