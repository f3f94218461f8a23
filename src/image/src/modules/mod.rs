//! The kernel modules a guest must load, from a kernel's module tree (`lib/modules/<release>/`).
//!
//! [`ModuleTree::open`] indexes the tree; [`ModuleTree::resolve`] turns the module names the guest
//! wants into the transitive closure of their dependencies, in load order (every module after
//! what it depends on), and sets aside those built into the kernel (listed in
//! `modules.builtin`: nothing to load). A name that is neither is an error.
//!
//! Dependencies come from `modules.dep` when the tree has one (an installed kernel: `depmod`
//! writes it). A kernel package unpacked without installing it (as `scripts/fetch-guest-kernel`
//! does) has none; then each module's own `.modinfo` `depends=` field is read, the list `depmod`
//! builds `modules.dep` from. Names compare as the kernel compares them: `-` equals `_`.

mod depfile;
mod file;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use file::{module_name, normalize_name, plain_file_name, read_module};

use crate::decompress::{Codec, DecompressError};
use crate::elf::ElfError;

/// Why a module tree cannot be read or a module cannot be resolved or read.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An index file is malformed.
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Two files in the tree are the same module.
    #[error("module {name:?} is in {dir} twice: {first} and {second}")]
    Duplicate {
        name: String,
        dir: PathBuf,
        first: PathBuf,
        second: PathBuf,
    },
    /// A wanted name is not a module name.
    #[error("{0:?} is not a module name (letters, digits, '_' and '-')")]
    BadName(String),
    /// A wanted module is neither a module file nor built in.
    #[error("kernel module {name:?} is neither a module nor built into the kernel in {dir}")]
    NotFound { name: String, dir: PathBuf },
    /// A module depends on one the tree does not have.
    #[error("kernel module {module:?} depends on {dependency:?}, which {dir} does not have")]
    MissingDependency {
        module: String,
        dependency: String,
        dir: PathBuf,
    },
    /// Modules depend on each other in a circle.
    #[error("kernel modules in {dir} depend on each other in a cycle: {}", chain.join(" -> "))]
    Cycle { chain: Vec<String>, dir: PathBuf },
    /// A compressed module's content does not match its suffix.
    #[error("module {path} should be {expected} by its name but {}", match found {
        Some(codec) => format!("is {codec}"),
        None => "has no recognised compression magic".to_owned(),
    })]
    CodecMismatch {
        path: PathBuf,
        expected: Codec,
        found: Option<Codec>,
    },
    /// A compressed module does not decompress.
    #[error("decompressing module {path}: {source}")]
    Decompress {
        path: PathBuf,
        source: DecompressError,
    },
    /// A module is not an ELF64 little-endian file.
    #[error("module {path} is not a usable ELF: {source}")]
    NotModule { path: PathBuf, source: ElfError },
    /// A module is an ELF but not a relocatable object.
    #[error("module {path} is an ELF of type {e_type}, not a relocatable object (1)")]
    NotRelocatable { path: PathBuf, e_type: u16 },
    /// A module has no `.modinfo` section.
    #[error("module {path} has no .modinfo section")]
    NoModinfo { path: PathBuf },
}

/// Where a tree's dependency lists come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepSource {
    /// The tree's `modules.dep`.
    ModulesDep,
    /// Each module's `.modinfo` (the tree has no `modules.dep`).
    Modinfo,
}

/// An indexed module tree.
#[derive(Debug, Clone)]
pub struct ModuleTree {
    dir: PathBuf,
    /// Normalised name → path relative to `dir`.
    modules: BTreeMap<String, PathBuf>,
    /// Normalised name → normalised dependency names, from `modules.dep`; `None`: read them from
    /// `.modinfo` when needed.
    deps: Option<BTreeMap<String, Vec<String>>>,
    builtin: BTreeSet<String>,
}

/// A module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Normalised name, e.g. `virtio_mmio`.
    pub name: String,
    /// Path relative to the module directory, e.g. `kernel/drivers/virtio/virtio_mmio.ko.xz`.
    pub relative: PathBuf,
    /// Full path of the (possibly compressed) file.
    pub path: PathBuf,
}

impl Module {
    /// The module as a plain `.ko` (decompressed, checked to be an ELF relocatable object).
    pub fn read(&self) -> Result<Vec<u8>, ModulesError> {
        read_module(&self.path)
    }

    /// [`Module::relative`] with any compression suffix removed: where the plain `.ko` goes.
    pub fn plain_relative(&self) -> PathBuf {
        match file::plain_file_name(&self.relative) {
            Some(plain) => self.relative.with_file_name(plain),
            None => self.relative.clone(),
        }
    }
}

/// The outcome of [`ModuleTree::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Modules to load, in this order: each after everything it depends on.
    pub modules: Vec<Module>,
    /// Wanted modules (and dependencies) that are built into the kernel: nothing to load.
    pub builtin: Vec<String>,
}

impl Resolution {
    /// The names of [`Resolution::modules`], in load order.
    pub fn names(&self) -> Vec<&str> {
        self.modules.iter().map(|m| m.name.as_str()).collect()
    }
}

impl ModuleTree {
    /// Indexes the module directory `dir` (`.../lib/modules/<release>`).
    pub fn open(dir: &Path) -> Result<Self, ModulesError> {
        let read_text = |name: &str| -> Result<Option<(PathBuf, String)>, ModulesError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some((path, text))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(ModulesError::Read { path, source }),
            }
        };
        // A missing directory is an error here, not an empty tree.
        std::fs::metadata(dir).map_err(|source| ModulesError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let builtin = match read_text("modules.builtin")? {
            Some((path, text)) => depfile::parse_builtin(&path, &text)?,
            None => {
                tracing::warn!(dir = %dir.display(), "no modules.builtin: assuming nothing is built in");
                BTreeSet::new()
            }
        };
        let mut tree = ModuleTree {
            dir: dir.to_owned(),
            modules: BTreeMap::new(),
            deps: None,
            builtin,
        };
        match read_text("modules.dep")? {
            Some((path, text)) => {
                let mut deps = BTreeMap::new();
                for line in depfile::parse_modules_dep(&path, &text)? {
                    // parse_modules_dep only returns paths that name modules.
                    let name = module_name(&line.path).unwrap_or_default();
                    let names = line.deps.iter().rev().filter_map(|d| module_name(d));
                    deps.insert(name.clone(), names.collect());
                    tree.add(name, line.path)?;
                }
                tree.deps = Some(deps);
            }
            None => {
                tracing::info!(
                    dir = %dir.display(),
                    "no modules.dep: reading dependencies from each module's .modinfo"
                );
                for relative in scan(dir)? {
                    if let Some(name) = module_name(&relative) {
                        tree.add(name, relative)?;
                    }
                }
            }
        }
        tracing::debug!(
            dir = %dir.display(),
            modules = tree.modules.len(),
            builtin = tree.builtin.len(),
            "module tree indexed"
        );
        Ok(tree)
    }

    fn add(&mut self, name: String, relative: PathBuf) -> Result<(), ModulesError> {
        if let Some(first) = self.modules.get(&name) {
            return Err(ModulesError::Duplicate {
                name,
                dir: self.dir.clone(),
                first: first.clone(),
                second: relative,
            });
        }
        self.modules.insert(name, relative);
        Ok(())
    }

    /// The module directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where dependency lists come from.
    pub fn dep_source(&self) -> DepSource {
        match self.deps {
            Some(_) => DepSource::ModulesDep,
            None => DepSource::Modinfo,
        }
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize_name(name))
    }

    /// The module file for `name`, if the tree has one.
    pub fn module(&self, name: &str) -> Option<Module> {
        let name = normalize_name(name);
        let relative = self.modules.get(&name)?;
        Some(Module {
            path: self.dir.join(relative),
            relative: relative.clone(),
            name,
        })
    }

    fn deps_of(&self, module: &Module) -> Result<Vec<String>, ModulesError> {
        match &self.deps {
            Some(deps) => Ok(deps.get(&module.name).cloned().unwrap_or_default()),
            None => file::modinfo_depends(&module.path, &module.read()?),
        }
    }

    /// The modules to load for `wanted`, dependencies first. The order is deterministic: wanted
    /// names in the order given, each preceded by its not-yet-listed dependencies (depth first,
    /// in the order `modprobe` would load them).
    pub fn resolve(&self, wanted: &[&str]) -> Result<Resolution, ModulesError> {
        let mut resolution = Resolution::default();
        let mut done: BTreeSet<String> = BTreeSet::new();
        for &want in wanted {
            if want.is_empty()
                || !want
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(ModulesError::BadName(want.to_owned()));
            }
            self.visit(&normalize_name(want), &mut done, &mut resolution)?;
        }
        Ok(resolution)
    }

    /// Depth-first post-order walk from `root`, with an explicit stack (a hostile index cannot
    /// overflow the thread's stack) that detects cycles.
    fn visit(
        &self,
        root: &str,
        done: &mut BTreeSet<String>,
        out: &mut Resolution,
    ) -> Result<(), ModulesError> {
        // Each frame: the module, its dependencies, how many of them were visited.
        let mut stack: Vec<(Module, Vec<String>, usize)> = Vec::new();
        // The names on the stack, for a quick cycle check.
        let mut visiting: BTreeSet<String> = BTreeSet::new();
        let mut next = Some((root.to_owned(), None::<String>));
        loop {
            if let Some((name, parent)) = next.take()
                && !done.contains(&name)
            {
                if visiting.contains(&name) {
                    let at = stack
                        .iter()
                        .position(|(m, _, _)| m.name == name)
                        .unwrap_or_default();
                    let mut chain: Vec<String> =
                        stack[at..].iter().map(|(m, _, _)| m.name.clone()).collect();
                    chain.push(name);
                    return Err(ModulesError::Cycle {
                        chain,
                        dir: self.dir.clone(),
                    });
                }
                if self.builtin.contains(&name) {
                    out.builtin.push(name.clone());
                    done.insert(name);
                } else if let Some(module) = self.module(&name) {
                    let deps = self.deps_of(&module)?;
                    visiting.insert(name);
                    stack.push((module, deps, 0));
                } else {
                    return Err(match parent {
                        None => ModulesError::NotFound {
                            name,
                            dir: self.dir.clone(),
                        },
                        Some(module) => ModulesError::MissingDependency {
                            module,
                            dependency: name,
                            dir: self.dir.clone(),
                        },
                    });
                }
            }
            let Some((module, deps, visited)) = stack.last_mut() else {
                return Ok(());
            };
            if let Some(dep) = deps.get(*visited) {
                *visited += 1;
                next = Some((dep.clone(), Some(module.name.clone())));
                continue;
            }
            if let Some((module, _, _)) = stack.pop() {
                visiting.remove(&module.name);
                done.insert(module.name.clone());
                out.modules.push(module);
            }
        }
    }
}

/// Module files under `dir`, relative to it, sorted. Symbolic links are not followed (an
/// installed tree's `build` and `source` point at kernel headers).
fn scan(dir: &Path) -> Result<Vec<PathBuf>, ModulesError> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let path = dir.join(&relative);
        let read_err = |source| ModulesError::Read {
            path: path.clone(),
            source,
        };
        for entry in std::fs::read_dir(&path).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let kind = entry.file_type().map_err(read_err)?;
            let child = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(child);
            } else if kind.is_file() && module_name(&child).is_some() {
                found.push(child);
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests;
