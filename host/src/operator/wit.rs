//! `invoke` as the component's WIT spells it, read from the bytes before
//! compiling: the names of its records, variants, enums and flags (which
//! wasmtime's structural types do not keep), and whether it takes or
//! returns a resource (which no operator may).

use std::collections::{HashMap, HashSet};

use wit_parser::decoding::{DecodedWasm, decode};
use wit_parser::{Function, Resolve, Type, TypeDefKind, TypeId, WorldItem, WorldKey};

use crate::types::{MAX_SIGNATURE_BYTES, TypeDefinition, ident};

/// `invoke`'s parameter and result types as the WIT spells them, and the
/// named types they use, in dependency order.
#[derive(Debug, Default)]
pub(crate) struct Spelling {
    pub(crate) params: Vec<String>,
    pub(crate) result: Option<String>,
    pub(crate) types: Vec<TypeDefinition>,
}

/// What the component's WIT says of `invoke`.
pub(crate) enum Invoke {
    /// Its spelling.
    Spelled(Spelling),
    /// It takes or returns a resource (named, in words).
    Resource(String),
    /// Nothing the names can be read from: the bytes do not decode, there
    /// is no world-level `invoke`, or its spelling is over the budget. The
    /// structural types are printed instead, and compiling says what is
    /// wrong with the bytes, if anything.
    Unknown,
}

/// Reads `invoke` from the component's WIT.
pub(crate) fn read(bytes: &[u8]) -> Invoke {
    // The decoder is a third party's, given bytes from anyone: a panic in
    // it costs the names, not the host.
    let decoded = std::panic::catch_unwind(|| decode(bytes).ok())
        .ok()
        .flatten();
    let Some(DecodedWasm::Component(resolve, world)) = decoded else {
        return Invoke::Unknown;
    };
    let invoke = resolve.worlds[world]
        .exports
        .iter()
        .find_map(|(key, item)| match (key, item) {
            (WorldKey::Name(name), WorldItem::Function(function)) if name == "invoke" => {
                Some(function)
            }
            _ => None,
        });
    let Some(invoke) = invoke else {
        return Invoke::Unknown;
    };
    if let Some(resource) = find_resource(&resolve, invoke) {
        return Invoke::Resource(resource);
    }
    let mut speller = Speller {
        resolve: &resolve,
        budget: MAX_SIGNATURE_BYTES,
        defined: HashSet::new(),
        names: HashMap::new(),
        uses: HashMap::new(),
        types: Vec::new(),
    };
    match speller.function(invoke) {
        Some((params, result)) => Invoke::Spelled(Spelling {
            params,
            result,
            types: speller.types,
        }),
        None => Invoke::Unknown,
    }
}

/// The first resource (or handle) `invoke`'s types reach, by name.
fn find_resource(resolve: &Resolve, invoke: &Function) -> Option<String> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Type> = invoke.params.iter().map(|param| param.ty).collect();
    stack.extend(invoke.result);
    while let Some(ty) = stack.pop() {
        let Type::Id(id) = ty else { continue };
        if !seen.insert(id) {
            continue;
        }
        let def = &resolve.types[id];
        match &def.kind {
            TypeDefKind::Resource => {
                return Some(def.name.clone().unwrap_or_else(|| "a resource".into()));
            }
            TypeDefKind::Handle(
                wit_parser::Handle::Own(resource) | wit_parser::Handle::Borrow(resource),
            ) => {
                let resource = &resolve.types[*resource];
                return Some(resource.name.clone().unwrap_or_else(|| "a resource".into()));
            }
            TypeDefKind::Record(record) => stack.extend(record.fields.iter().map(|f| f.ty)),
            TypeDefKind::Tuple(tuple) => stack.extend(tuple.types.iter().copied()),
            TypeDefKind::Variant(variant) => {
                stack.extend(variant.cases.iter().filter_map(|c| c.ty))
            }
            TypeDefKind::Option(ty) | TypeDefKind::List(ty) | TypeDefKind::Type(ty) => {
                stack.push(*ty);
            }
            TypeDefKind::FixedLengthList(ty, _) => stack.push(*ty),
            TypeDefKind::Map(key, value) => stack.extend([*key, *value]),
            TypeDefKind::Result(result) => stack.extend(result.ok.into_iter().chain(result.err)),
            TypeDefKind::Future(ty) | TypeDefKind::Stream(ty) => stack.extend(*ty),
            TypeDefKind::Flags(_) | TypeDefKind::Enum(_) | TypeDefKind::Unknown => {}
        }
    }
    None
}

/// Writes types as WIT, named ones by name, within a budget of bytes (a
/// long name used a million times is a megabyte per use of it).
struct Speller<'a> {
    resolve: &'a Resolve,
    budget: usize,
    defined: HashSet<TypeId>,
    /// The names defined so far, and by which type.
    names: HashMap<String, TypeId>,
    /// `used` of each type asked about.
    uses: HashMap<TypeId, TypeId>,
    types: Vec<TypeDefinition>,
}

impl Speller<'_> {
    fn function(&mut self, invoke: &Function) -> Option<(Vec<String>, Option<String>)> {
        let mut params = Vec::new();
        for param in &invoke.params {
            let mut text = String::new();
            self.ty(param.ty, &mut text)?;
            params.push(text);
        }
        // `result<T, error>`: the host checks the shape (and says what is
        // wrong with it) on the compiled component; here only T matters.
        let ok = match invoke.result {
            Some(Type::Id(id)) => match &self.resolve.types[id].kind {
                TypeDefKind::Result(result) => result.ok,
                _ => return None,
            },
            _ => return None,
        };
        let result = match ok {
            Some(ty) => {
                let mut text = String::new();
                self.ty(ty, &mut text)?;
                Some(text)
            }
            None => None,
        };
        Some((params, result))
    }

    fn push(&mut self, out: &mut String, text: &str) -> Option<()> {
        self.budget = self.budget.checked_sub(text.len())?;
        out.push_str(text);
        Some(())
    }

    /// Spells `ty` into `out`; a named type by its name, defining it (once)
    /// first.
    fn ty(&mut self, ty: Type, out: &mut String) -> Option<()> {
        let scalar = match ty {
            Type::Bool => "bool",
            Type::U8 => "u8",
            Type::U16 => "u16",
            Type::U32 => "u32",
            Type::U64 => "u64",
            Type::S8 => "s8",
            Type::S16 => "s16",
            Type::S32 => "s32",
            Type::S64 => "s64",
            Type::F32 => "f32",
            Type::F64 => "f64",
            Type::Char => "char",
            Type::String => "string",
            Type::ErrorContext => "error-context",
            Type::Id(id) => {
                let id = self.used(id);
                let def = &self.resolve.types[id];
                return match &def.name {
                    Some(name) => {
                        let name = ident(name).into_owned();
                        self.define(id)?;
                        self.push(out, &name)
                    }
                    None => self.kind(&def.kind, out),
                };
            }
        };
        self.push(out, scalar)
    }

    /// An anonymous type's spelling (`list<T>`, `option<T>`, ...).
    fn kind(&mut self, kind: &TypeDefKind, out: &mut String) -> Option<()> {
        let mut generic = |this: &mut Self, head: &str, types: &[Option<Type>]| {
            this.push(out, head)?;
            this.push(out, "<")?;
            for (index, ty) in types.iter().enumerate() {
                if index > 0 {
                    this.push(out, ", ")?;
                }
                match ty {
                    Some(ty) => this.ty(*ty, out)?,
                    None => this.push(out, "_")?,
                }
            }
            this.push(out, ">")
        };
        match kind {
            TypeDefKind::List(ty) => generic(self, "list", &[Some(*ty)]),
            TypeDefKind::Option(ty) => generic(self, "option", &[Some(*ty)]),
            TypeDefKind::Tuple(tuple) => {
                let types: Vec<_> = tuple.types.iter().copied().map(Some).collect();
                generic(self, "tuple", &types)
            }
            TypeDefKind::Result(result) => match (result.ok, result.err) {
                (None, None) => self.push(out, "result"),
                (ok, None) => generic(self, "result", &[ok]),
                (ok, err) => generic(self, "result", &[ok, err]),
            },
            TypeDefKind::Type(ty) => self.ty(*ty, out),
            // Anonymous records, variants, enums and flags do not exist in
            // WIT, and resources were refused before: nothing to spell.
            _ => None,
        }
    }

    /// Adds the definition of the named type `id` (after those it uses),
    /// unless it is already there or is the contract's `error`; `None`
    /// when another type already has its name (two `point`s, from two
    /// interfaces: the bare names would be ambiguous).
    fn define(&mut self, id: TypeId) -> Option<()> {
        if !self.defined.insert(id) {
            return Some(());
        }
        let def = &self.resolve.types[id];
        let name = def.name.clone()?;
        if name == "error" && self.is_contract_type(id) {
            return Some(());
        }
        if self.names.insert(name.clone(), id).is_some() {
            return None;
        }
        let mut text = String::new();
        // `head name { item, item }`: each item written by `item`.
        let list =
            |this: &mut Self,
             text: &mut String,
             head: &str,
             count: usize,
             item: &mut dyn FnMut(&mut Self, &mut String, usize) -> Option<()>| {
                this.push(text, head)?;
                this.push(text, " ")?;
                this.push(text, &ident(&name))?;
                this.push(text, " { ")?;
                for index in 0..count {
                    if index > 0 {
                        this.push(text, ", ")?;
                    }
                    item(this, text, index)?;
                }
                this.push(text, " }")
            };
        match &def.kind {
            TypeDefKind::Record(record) => {
                list(
                    self,
                    &mut text,
                    "record",
                    record.fields.len(),
                    &mut |this, text, i| {
                        let field = &record.fields[i];
                        this.push(text, &ident(&field.name))?;
                        this.push(text, ": ")?;
                        this.ty(field.ty, text)
                    },
                )?;
            }
            TypeDefKind::Variant(variant) => {
                list(
                    self,
                    &mut text,
                    "variant",
                    variant.cases.len(),
                    &mut |this, text, i| {
                        let case = &variant.cases[i];
                        this.push(text, &ident(&case.name))?;
                        if let Some(ty) = case.ty {
                            this.push(text, "(")?;
                            this.ty(ty, text)?;
                            this.push(text, ")")?;
                        }
                        Some(())
                    },
                )?;
            }
            TypeDefKind::Enum(cases) => {
                list(
                    self,
                    &mut text,
                    "enum",
                    cases.cases.len(),
                    &mut |this, text, i| this.push(text, &ident(&cases.cases[i].name)),
                )?;
            }
            TypeDefKind::Flags(flags) => {
                list(
                    self,
                    &mut text,
                    "flags",
                    flags.flags.len(),
                    &mut |this, text, i| this.push(text, &ident(&flags.flags[i].name)),
                )?;
            }
            kind => {
                // An alias (`type bytes = list<u8>`) or a named generic.
                self.push(&mut text, "type ")?;
                self.push(&mut text, &ident(&name))?;
                self.push(&mut text, " = ")?;
                match kind {
                    TypeDefKind::Type(ty) => self.ty(*ty, &mut text)?,
                    kind => self.kind(kind, &mut text)?,
                }
            }
        }
        self.types.push(TypeDefinition {
            name,
            definition: text,
        });
        Some(())
    }

    /// The type a `use` brings in under its own name (`use types.{stats}`
    /// is an alias named `stats` of the interface's `stats`), else `id`.
    fn used(&mut self, start: TypeId) -> TypeId {
        if let Some(&id) = self.uses.get(&start) {
            return id;
        }
        let mut id = start;
        // A chain of uses is at most every type long (a bound, should a
        // decoded one ever loop); each chain is walked once.
        for _ in 0..self.resolve.types.len() {
            match self.resolve.types[id].kind {
                TypeDefKind::Type(Type::Id(target))
                    if self.resolve.types[target].name == self.resolve.types[id].name =>
                {
                    id = target;
                }
                _ => break,
            }
        }
        self.uses.insert(start, id);
        id
    }

    /// Whether `id` is defined by the contract's `types` interface.
    fn is_contract_type(&self, id: TypeId) -> bool {
        let wit_parser::TypeOwner::Interface(interface) = self.resolve.types[id].owner else {
            return false;
        };
        let interface = &self.resolve.interfaces[interface];
        interface.name.as_deref() == Some("types")
            && interface.package.is_some_and(|package| {
                let name = &self.resolve.packages[package].name;
                name.namespace == "xcs" && name.name == "operator"
            })
    }
}
