//! Rhai closures kept by rules (`when`, `emit`, `key`, ...) and how they are called.
//!
//! A closure is called by name in its file's AST with `eval_ast(false)`, so the file's top
//! level never runs again; captured variables travel as curried arguments. `this` can be
//! bound to a rule's per-key state, which is how handlers mutate it in place.

use crate::native::Pred;
use rhai::{AST, CallFnOptions, Dynamic, EvalAltResult, FnPtr, Scope};
use std::sync::{Arc, OnceLock};

/// A closure from a rule file.
#[derive(Debug, Clone)]
pub(crate) struct Func {
    ptr: FnPtr,
    /// The closure as a native predicate, if it is one; worked out on first use.
    native: Arc<OnceLock<Option<Pred>>>,
    /// The closure reads a property named `value` (`e.value`); worked out on first use.
    reads_value: Arc<OnceLock<bool>>,
}

impl Func {
    pub(crate) fn new(ptr: FnPtr) -> Self {
        Func { ptr, native: Arc::new(OnceLock::new()), reads_value: Arc::new(OnceLock::new()) }
    }

    /// Does the closure's own body read a property named `value` (`e.value`)? Functions it
    /// calls are not looked into.
    pub(crate) fn reads_value(&self, ast: &AST) -> bool {
        *self.reads_value.get_or_init(|| {
            let mut found = false;
            self.walk_own(ast, &mut |node| {
                if let rhai::ASTNode::Expr(rhai::Expr::Property(p, _)) = node {
                    found |= p.2 == "value";
                }
                !found
            });
            found
        })
    }

    /// Every name the closure's own body may read a field by: properties (`e.owner`,
    /// `e.payload.owner`) and string constants (`e["owner"]`, or a name passed on). A superset,
    /// for checks that must not miss a field; functions it calls are not looked into.
    pub(crate) fn names_read(&self, ast: &AST) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        self.walk_own(ast, &mut |node| {
            match node {
                rhai::ASTNode::Expr(rhai::Expr::Property(p, _)) => {
                    names.insert(p.2.to_string());
                }
                rhai::ASTNode::Expr(rhai::Expr::StringConstant(s, _)) => {
                    names.insert(s.to_string());
                }
                _ => {}
            }
            true
        });
        names
    }

    /// Walks the closure's own body (an AST holding just its function, as `Pred::compile`
    /// does) until `on_node` returns `false`. Nothing is walked if it is not a script
    /// function of `ast`.
    fn walk_own(&self, ast: &AST, on_node: &mut dyn FnMut(&rhai::ASTNode<'_>) -> bool) {
        let Some(def) = self
            .arity_in(ast)
            .and_then(|n| ast.shared_lib().get_script_fn(self.ptr.fn_name(), self.ptr.curry().len() + n))
        else {
            return;
        };
        let mut module = rhai::Module::new();
        module.set_script_fn(def.clone());
        AST::new_from_module(module).walk(&mut |path: &[rhai::ASTNode<'_>]| path.last().is_none_or(&mut *on_node));
    }

    /// The native form of this predicate, if it has one.
    pub(crate) fn native(&self, ast: &AST) -> Option<&Pred> {
        self.native.get_or_init(|| Pred::compile(&self.ptr, ast)).as_ref()
    }

    /// Is it a script function of `ast` taking `arity` arguments (besides captures)?
    pub(crate) fn resolves_in(&self, ast: &AST, arity: usize) -> bool {
        ast.shared_lib().get_script_fn(self.ptr.fn_name(), self.ptr.curry().len() + arity).is_some()
    }

    /// How many parameters the function takes, if it is a script function of `ast`.
    pub(crate) fn arity_in(&self, ast: &AST) -> Option<usize> {
        (0..=4).find(|n| self.resolves_in(ast, *n))
    }

    /// Calls the closure with `args`, `this` bound to `this` when given.
    pub(crate) fn call(
        &self,
        engine: &rhai::Engine,
        ast: &AST,
        this: Option<&mut Dynamic>,
        args: impl IntoIterator<Item = Dynamic>,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let curry = self.ptr.curry();
        let mut all: Vec<Dynamic> = Vec::with_capacity(curry.len() + 2);
        all.extend(curry.iter().cloned());
        all.extend(args);
        let mut options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        if let Some(this) = this {
            options = options.bind_this_ptr(this);
        }
        let mut scope = Scope::new();
        engine.call_fn_with_options::<Dynamic>(options, &mut scope, ast, self.ptr.fn_name(), all)
    }
}
