//! A TOML value tree that remembers where every value and key came from, so that errors found after
//! extends, profiles and `--set` are merged can still point at the right file, line and column.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use toml_edit::{Item, Table, Value as TomlValue};

use crate::diagnostic::{Diagnostic, Origin, SourceFile};

/// A value plus its origin, and the origin of the key that named it (for "unknown key" errors).
#[derive(Debug, Clone)]
pub struct Sourced {
    pub tree: Tree,
    pub origin: Origin,
    pub key_origin: Option<Origin>,
}

#[derive(Debug, Clone)]
pub enum Tree {
    Table(BTreeMap<String, Sourced>),
    Array(Vec<Sourced>),
    Leaf(Value),
}

impl Sourced {
    pub fn empty_table(origin: Origin) -> Sourced {
        Sourced { tree: Tree::Table(BTreeMap::new()), origin, key_origin: None }
    }

    pub fn as_table(&self) -> Option<&BTreeMap<String, Sourced>> {
        match &self.tree {
            Tree::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_table_mut(&mut self) -> Option<&mut BTreeMap<String, Sourced>> {
        match &mut self.tree {
            Tree::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match &self.tree {
            Tree::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
            Tree::Array(a) => Value::Array(a.iter().map(Sourced::to_json).collect()),
            Tree::Leaf(v) => v.clone(),
        }
    }

    /// Deep merge: tables merge key by key, anything else in `over` replaces what is in `self`.
    pub fn merge(&mut self, over: Sourced) {
        match (&mut self.tree, over.tree) {
            (Tree::Table(base), Tree::Table(over_t)) => {
                for (k, v) in over_t {
                    match base.get_mut(&k) {
                        Some(existing) => existing.merge(v),
                        None => {
                            base.insert(k, v);
                        }
                    }
                }
            }
            (_, tree) => {
                self.tree = tree;
                self.origin = over.origin;
                if over.key_origin.is_some() {
                    self.key_origin = over.key_origin;
                }
            }
        }
    }

    /// Every value's origin by JSON pointer (the root is `""`).
    pub fn source_map(&self) -> SourceMap {
        let mut map = SourceMap::default();
        self.collect_origins(String::new(), &mut map);
        map
    }

    fn collect_origins(&self, pointer: String, map: &mut SourceMap) {
        match &self.tree {
            Tree::Table(t) => {
                for (k, v) in t {
                    v.collect_origins(format!("{pointer}/{}", escape_pointer(k)), map);
                }
            }
            Tree::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    v.collect_origins(format!("{pointer}/{i}"), map);
                }
            }
            Tree::Leaf(_) => {}
        }
        map.entries.insert(pointer, (self.origin.clone(), self.key_origin.clone()));
    }
}

/// Origins of the resolved manifest's values by JSON pointer.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    entries: HashMap<String, (Origin, Option<Origin>)>,
}

impl SourceMap {
    /// The origin of the value at `pointer`, or of its nearest ancestor that has one.
    pub fn value(&self, pointer: &str) -> Option<Origin> {
        self.nearest(pointer).map(|(o, _)| o.clone())
    }

    /// The origin of the key naming the value at `pointer` (falls back to the value's origin).
    pub fn key(&self, pointer: &str) -> Option<Origin> {
        self.nearest(pointer).map(|(o, k)| k.clone().unwrap_or_else(|| o.clone()))
    }

    /// Every manifest file a value came from (the file and its `extends` chain), by the name
    /// shown to the user, each once.
    pub fn files(&self) -> Vec<Arc<SourceFile>> {
        let mut files: BTreeMap<String, Arc<SourceFile>> = BTreeMap::new();
        for (origin, key) in self.entries.values() {
            for o in std::iter::once(origin).chain(key) {
                if let Origin::File { file, .. } = o {
                    files.entry(file.display.clone()).or_insert_with(|| Arc::clone(file));
                }
            }
        }
        files.into_values().collect()
    }

    fn nearest(&self, pointer: &str) -> Option<&(Origin, Option<Origin>)> {
        let mut p = pointer;
        loop {
            if let Some(e) = self.entries.get(p) {
                return Some(e);
            }
            let cut = p.rfind('/')?;
            p = &p[..cut];
        }
    }
}

pub fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Everything needed to rewrite `file:` references while loading one manifest file.
pub struct LoadCtx<'a> {
    pub file: Arc<SourceFile>,
    /// Directory of the file being loaded (absolute).
    pub dir: &'a Path,
    /// Project root (absolute); `file:` references are rewritten relative to it.
    pub project_root: &'a Path,
}

/// Prefix marking a string value as a path to an input file or directory.
pub const FILE_PREFIX: &str = "file:";

impl LoadCtx<'_> {
    fn origin(&self, span: Option<std::ops::Range<usize>>) -> Origin {
        match span {
            Some(span) => Origin::File { file: self.file.clone(), span },
            None => Origin::Derived,
        }
    }

    pub fn table(&self, table: &Table, span: Option<std::ops::Range<usize>>) -> Result<Sourced, Diagnostic> {
        let mut out = BTreeMap::new();
        for (k, item) in table.iter() {
            let key_span = table.key(k).and_then(|key| key.span());
            let mut v = self.item(item)?;
            v.key_origin = Some(self.origin(key_span.clone()));
            if matches!(v.origin, Origin::Derived) {
                v.origin = self.origin(key_span);
            }
            out.insert(k.to_string(), v);
        }
        Ok(Sourced { tree: Tree::Table(out), origin: self.origin(span), key_origin: None })
    }

    fn item(&self, item: &Item) -> Result<Sourced, Diagnostic> {
        match item {
            Item::None => Ok(Sourced { tree: Tree::Leaf(Value::Null), origin: Origin::Derived, key_origin: None }),
            Item::Table(t) => self.table(t, t.span()),
            Item::ArrayOfTables(a) => {
                let items = a.iter().map(|t| self.table(t, t.span())).collect::<Result<Vec<_>, _>>()?;
                Ok(Sourced { tree: Tree::Array(items), origin: self.origin(a.span()), key_origin: None })
            }
            Item::Value(v) => self.value(v),
        }
    }

    fn value(&self, value: &TomlValue) -> Result<Sourced, Diagnostic> {
        let origin = self.origin(value.span());
        let tree = match value {
            TomlValue::String(s) => Tree::Leaf(Value::String(self.rewrite_file_ref(s.value()))),
            TomlValue::Integer(i) => Tree::Leaf(Value::from(*i.value())),
            TomlValue::Float(f) => {
                let x = *f.value();
                let n = serde_json::Number::from_f64(x).ok_or_else(|| {
                    Diagnostic::new(format!("the float `{x}` is not allowed in a manifest"))
                        .at(Some(origin.clone()))
                        .expected("a finite number")
                        .help("nan and inf cannot be hashed canonically; use a finite value")
                })?;
                Tree::Leaf(Value::Number(n))
            }
            TomlValue::Boolean(b) => Tree::Leaf(Value::Bool(*b.value())),
            // Dates have no JSON type; their canonical TOML text is stable, so keep that.
            TomlValue::Datetime(d) => Tree::Leaf(Value::String(d.value().to_string())),
            TomlValue::Array(a) => Tree::Array(a.iter().map(|v| self.value(v)).collect::<Result<Vec<_>, _>>()?),
            TomlValue::InlineTable(t) => {
                let mut out = BTreeMap::new();
                for (k, v) in t.iter() {
                    let key_span = t.key(k).and_then(|key| key.span());
                    let mut sv = self.value(v)?;
                    sv.key_origin = Some(self.origin(key_span));
                    out.insert(k.to_string(), sv);
                }
                Tree::Table(out)
            }
        };
        Ok(Sourced { tree, origin, key_origin: None })
    }

    /// `file:REL` is relative to the file that declares it; store it relative to the project root
    /// so the resolved manifest never contains a machine-specific absolute path for project files.
    fn rewrite_file_ref(&self, s: &str) -> String {
        match s.strip_prefix(FILE_PREFIX) {
            Some(rel) => format!("{FILE_PREFIX}{}", project_relative(self.dir, rel, self.project_root)),
            None => s.to_string(),
        }
    }
}

/// `rel` (relative to `dir`, or absolute) expressed relative to `root` when possible, with `/`.
pub fn project_relative(dir: &Path, rel: &str, root: &Path) -> String {
    let p = Path::new(rel);
    if p.is_absolute() {
        return rel.to_string();
    }
    let abs = normalize(&dir.join(p));
    let rel_path = relative_to(&abs, root);
    rel_path.to_string_lossy().replace('\\', "/")
}

/// Lexical normalisation (no filesystem access: the file may not exist yet).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let p: Vec<_> = path.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_refs_become_project_relative() {
        let root = Path::new("/repo");
        assert_eq!(project_relative(Path::new("/repo/experiments"), "data/x.txt", root), "experiments/data/x.txt");
        assert_eq!(
            project_relative(Path::new("/repo/experiments/ablations"), "../data/x.txt", root),
            "experiments/data/x.txt"
        );
        assert_eq!(project_relative(Path::new("/repo"), "../shared/d.txt", root), "../shared/d.txt");
        assert_eq!(project_relative(Path::new("/repo"), "/abs/d.txt", root), "/abs/d.txt");
    }
}
