//! Planning: manifest entries -> plugin nodes -> a checked DAG in a deterministic topological order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aurora_store::Digest;
use serde_json::{Value, json};

use crate::canonical::{KeyEncoder, canonical_json, derive_seed, digest_json};
use crate::diagnostic::{Diagnostic, Diagnostics, suggestion};
use crate::manifest::ResolvedManifest;
use crate::plugin::{InputSource, InputSpec, PlanContext, Plugin};
use crate::validate::validate;

/// Salt of the node-key encoding. Bump it when the encoding or anything every key depends on changes.
pub const KEY_SCHEMA_VERSION: &str = "aurora-node-key/1";

/// A node ready to be keyed and executed.
pub struct PlannedNode {
    pub id: String,
    pub plugin: &'static dyn Plugin,
    pub config: Value,
    pub inputs: BTreeMap<String, InputSpec>,
    pub seed: u64,
    pub facts: BTreeMap<String, String>,
    pub pointer: String,
}

impl PlannedNode {
    /// The node key, given the content digests of its inputs (by input name).
    pub fn key(&self, input_digests: &BTreeMap<String, Digest>) -> Digest {
        let mut enc = KeyEncoder::new(KEY_SCHEMA_VERSION);
        enc.str(self.plugin.id()).str(self.plugin.version()).bytes(&canonical_json(&self.config)).u64(self.seed);
        enc.u64(input_digests.len() as u64);
        for (name, digest) in input_digests {
            enc.str(name).digest(digest);
        }
        enc.u64(self.facts.len() as u64);
        for (k, v) in &self.facts {
            enc.str(k).str(v);
        }
        enc.finish()
    }

    /// What went into the key, stored with the action so a later plan can say why a node is pending.
    pub fn key_components(&self, input_digests: &BTreeMap<String, Digest>) -> Value {
        json!({
            "plugin": self.plugin.id(),
            "plugin_version": self.plugin.version(),
            "config": self.config,
            "config_digest": digest_json(&self.config).to_hex(),
            "seed": self.seed,
            "inputs": input_digests.iter().map(|(k, d)| (k.clone(), Value::String(d.to_hex()))).collect::<serde_json::Map<_, _>>(),
            "facts": self.facts,
        })
    }

    /// Upstream node ids, in input-name order.
    pub fn upstream(&self) -> impl Iterator<Item = &str> {
        self.inputs.values().filter_map(|i| match &i.source {
            InputSource::Node(id) => Some(id.as_str()),
            InputSource::Path(_) => None,
        })
    }
}

/// A validated manifest planned into a DAG.
pub struct Plan {
    /// The resolved manifest; with an inputs lock, its digest covers the locked entries the
    /// plan reads (see [`crate::lock`]).
    pub manifest: ResolvedManifest,
    /// The inputs lock beside the manifest, if any.
    pub lock: Option<crate::lock::InputsLock>,
    /// Topological order; ties broken by node id, so the order is deterministic.
    pub nodes: Vec<PlannedNode>,
    /// The language packs the manifest loads (named in the run record).
    pub languages: Vec<crate::language::LoadedPack>,
    /// What planning warns about without failing (see [`PlanContext::warn`]).
    pub warnings: Vec<Diagnostic>,
    index: HashMap<String, usize>,
}

impl Plan {
    pub fn node(&self, id: &str) -> Option<&PlannedNode> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// `id` and everything it depends on (for `--until`).
    pub fn ancestors_of(&self, id: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id.to_string()];
        while let Some(n) = stack.pop() {
            if seen.insert(n.clone())
                && let Some(node) = self.node(&n)
            {
                stack.extend(node.upstream().map(str::to_string));
            }
        }
        seen
    }

    /// A diagnostic for a node id given on the command line that is not in the plan.
    pub fn unknown_node(&self, id: &str, flag: &str) -> Diagnostic {
        let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        Diagnostic::new(format!("`{flag} {id}`: no node `{id}` in this plan"))
            .expected("a node id as printed by `aurora plan`, e.g. `steps/clean`")
            .help(suggestion(id, &ids))
    }
}

/// Validates and plans a resolved manifest.
pub fn plan(manifest: ResolvedManifest) -> Result<Plan, Diagnostics> {
    match plan_keeping_a_bad_lock(manifest)? {
        (plan, None) => Ok(plan),
        (_, Some(problem)) => Err(problem.into()),
    }
}

/// [`plan`], but an inputs lock that cannot be used (unparsable, another version, another
/// manifest's) is returned beside the plan instead of failing it, the plan having no lock:
/// what `aurora lock` needs to rewrite it.
pub fn plan_keeping_a_bad_lock(manifest: ResolvedManifest) -> Result<(Plan, Option<Diagnostic>), Diagnostics> {
    validate(&manifest)?;
    let experiment = manifest.experiment()?;
    let ctx = PlanContext::new(&manifest);
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    // Entries whose planning failed: references to them are consequences of errors already
    // reported, not problems of their own.
    let mut failed = BTreeSet::new();
    let mut entry_refs = Vec::new();
    for entry in ctx.entries() {
        let plugin = entry.plugin;
        entry_refs.push(entry.reference());
        match plugin.plan(&entry, &ctx) {
            Ok(nodes) => specs.extend(nodes.into_iter().map(|n| (plugin, n))),
            Err(d) => {
                problems.extend(d.0);
                failed.insert(entry.node_id());
            }
        }
    }
    let entry_refs: Vec<&str> = entry_refs.iter().map(String::as_str).collect();

    let mut nodes: BTreeMap<String, PlannedNode> = BTreeMap::new();
    for (entry_plugin, spec) in specs {
        let plugin = match spec.plugin {
            None => entry_plugin,
            Some(id) => match crate::plugin::registry().get(id) {
                Some(p) => p,
                None => {
                    problems.push(
                        Diagnostic::new(format!("node `{}` needs the plugin `{id}`, which is not registered", spec.id))
                            .at(manifest.sources.value(&spec.pointer))
                            .pointer(spec.pointer.clone())
                            .help(format!(
                                "`{}` plans it; link the crate providing `{id}` into the binary",
                                entry_plugin.id()
                            )),
                    );
                    continue;
                }
            },
        };
        if let Some(existing) = nodes.get(&spec.id) {
            // Two entries may plan the same shared node (e.g. two mixtures tokenizing one source);
            // that is one node, not a conflict, when everything that defines it is identical.
            let same = existing.plugin.id() == plugin.id()
                && existing.config == spec.config
                && existing
                    .inputs
                    .iter()
                    .map(|(k, v)| (k, &v.source))
                    .eq(spec.inputs.iter().map(|(k, v)| (k, &v.source)));
            if same {
                continue;
            }
            problems.push(
                Diagnostic::new(format!("two different nodes have the id `{}`", spec.id))
                    .at(manifest.sources.key(&spec.pointer))
                    .pointer(spec.pointer.clone())
                    .help(format!(
                        "the other is planned by the entry at {}; node ids must be unique, rename one of the entries",
                        crate::validate::pointer_to_dotted(&existing.pointer)
                    )),
            );
            continue;
        }
        let facts = plugin.execution_facts(&spec.config);
        let seed = derive_seed(experiment.seed, &spec.id);
        nodes.insert(
            spec.id.clone(),
            PlannedNode {
                id: spec.id,
                plugin,
                config: spec.config,
                inputs: spec.inputs,
                seed,
                facts,
                pointer: spec.pointer,
            },
        );
    }
    for node in nodes.values() {
        for (name, input) in &node.inputs {
            if let InputSource::Node(up) = &input.source
                && !nodes.contains_key(up)
                && !failed.contains(up)
            {
                let as_ref = up.replacen('/', ".", 1);
                problems.push(
                    Diagnostic::new(format!(
                        "input `{name}` of `{}` refers to `{as_ref}`, which is not defined",
                        node.id
                    ))
                    .at(manifest.sources.value(&input.pointer))
                    .pointer(input.pointer.clone())
                    .expected("`SECTION.NAME` of an entry in this manifest, or `file:PATH`")
                    .help(suggestion(&as_ref, &entry_refs)),
                );
            }
        }
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    let order = topological_order(&nodes).map_err(|cycle| {
        let first = &nodes[&cycle[0]];
        Diagnostics::from(
            Diagnostic::new(format!("the steps form a cycle: {}", cycle.join(" -> ")))
                .at(manifest.sources.value(&first.pointer))
                .pointer(first.pointer.clone())
                .help("a node cannot depend on its own output; remove one of the inputs in the cycle"),
        )
    })?;
    let ordered: Vec<PlannedNode> =
        order.iter().map(|id| nodes.remove(id).expect("ordered ids come from the map")).collect();
    let index = ordered.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect();
    let (lock, unreadable) = match crate::lock::read(&manifest.path, &manifest.project_root) {
        Ok(lock) => (lock, None),
        Err(problem) => (None, Some(problem)),
    };
    let languages = ctx.languages().to_vec();
    let warnings = ctx.warnings();
    drop(ctx);
    let mut plan = Plan { manifest, lock, nodes: ordered, languages, warnings, index };
    if let Some(used) = plan.lock.as_ref().and_then(|l| crate::lock::digest_of_used(l, &plan)) {
        plan.manifest.digest = crate::canonical::digest_json(
            &serde_json::json!({"manifest": plan.manifest.digest.to_string(), "inputs_lock": used.to_string()}),
        );
    }
    Ok((plan, unreadable))
}

/// Kahn's algorithm with the ready set ordered by id. On a cycle, returns one cycle's node ids
/// (first id repeated at the end).
fn topological_order(nodes: &BTreeMap<String, PlannedNode>) -> Result<Vec<String>, Vec<String>> {
    let mut indegree: BTreeMap<&str, usize> = nodes.keys().map(|k| (k.as_str(), 0)).collect();
    let mut downstream: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in nodes.values() {
        for up in node.upstream().collect::<BTreeSet<_>>() {
            *indegree.get_mut(node.id.as_str()).expect("every node has an entry") += 1;
            downstream.entry(up).or_default().push(node.id.as_str());
        }
    }
    let mut ready: BTreeSet<&str> = indegree.iter().filter(|(_, d)| **d == 0).map(|(k, _)| *k).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(id) = ready.pop_first() {
        order.push(id.to_string());
        for &down in downstream.get(id).map(Vec::as_slice).unwrap_or_default() {
            let d = indegree.get_mut(down).expect("every node has an entry");
            *d -= 1;
            if *d == 0 {
                ready.insert(down);
            }
        }
    }
    if order.len() == nodes.len() {
        return Ok(order);
    }
    // Walk upstream edges from any node left over until one repeats: that is a cycle.
    let done: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let start = nodes.keys().find(|k| !done.contains(k.as_str())).expect("some node is left");
    let mut path: Vec<String> = vec![start.clone()];
    loop {
        let current = &nodes[path.last().expect("non-empty")];
        let next = current.upstream().find(|u| !done.contains(u)).expect("a node in a cycle has an unfinished input");
        if let Some(pos) = path.iter().position(|p| p == next) {
            let mut cycle: Vec<String> = path[pos..].to_vec();
            cycle.reverse();
            cycle.push(cycle[0].clone());
            return Err(cycle);
        }
        path.push(next.to_string());
    }
}
