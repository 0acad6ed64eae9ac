//! Modules: job guests and UDF modules, validated and stored by hash.

use super::*;

impl Domain {
    /// Validates and stores a job module (content-addressed); refusals are
    /// ledger entries too.
    pub fn upload_module(&self, actor: &str, bytes: &[u8]) -> Result<String, DomainError> {
        self.upload(actor, bytes, ModuleKind::Job)
            .map(|(sha, _)| sha)
    }

    /// Validates and stores a UDF module; returns its address and its
    /// declared functions as `name(Float64, Float64) -> Float64`.
    pub fn upload_udf_module(
        &self,
        actor: &str,
        bytes: &[u8],
    ) -> Result<(String, Vec<String>), DomainError> {
        self.upload(actor, bytes, ModuleKind::Udf)
    }

    pub(crate) fn upload(
        &self,
        actor: &str,
        bytes: &[u8],
        kind: ModuleKind,
    ) -> Result<(String, Vec<String>), DomainError> {
        self.require(actor, Role::Developer, "upload modules")?;
        let sha = sha256_hex(bytes);
        let kind_name = module_kind_name(kind);
        let module = match self.validated(bytes, kind) {
            Ok(m) => m,
            Err(DomainError::Sandbox(e)) => {
                self.record(
                    actor,
                    "module.refused",
                    json!({"sha256": sha, "size": bytes.len(), "kind": kind_name, "reason": e.to_string()}),
                )?;
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        let functions: Vec<String> = module
            .functions()
            .iter()
            .map(udf_signature)
            .chain(
                module
                    .aggregates()
                    .iter()
                    .map(|a| format!("{} aggregate", udf_signature(&a.function))),
            )
            .collect();
        self.commit_recorded(actor, "module.uploaded", |tx| {
            store::jobs::insert_module(
                tx,
                &sha,
                bytes,
                actor,
                &self.now_rfc3339(),
                kind_name,
                &serde_json::to_string(&functions).unwrap_or_else(|_| "[]".into()),
            )?;
            let stored_kind = store::jobs::module_kind(tx, &sha)?;
            if stored_kind.as_deref() != Some(kind_name) {
                return Err(DomainError::ModuleKindConflict {
                    module: sha.to_string(),
                    stored: stored_kind.unwrap_or_default(),
                });
            }
            Ok(Change::Record(
                json!({"sha256": sha, "size": bytes.len(), "kind": kind_name, "functions": functions}),
                (),
            ))
        })?;
        Ok((sha, functions))
    }

    /// Validates and compiles a module, or returns it from the cache.
    pub(crate) fn validated(
        &self,
        bytes: &[u8],
        kind: ModuleKind,
    ) -> Result<unseen_sandbox::ValidatedModule, DomainError> {
        let key = format!("{}:{}", module_kind_name(kind), sha256_hex(bytes));
        if let Some(m) = lock(&self.compiled).get(&key) {
            return Ok(m.clone());
        }
        let module = self.sandbox.validate(bytes, kind)?;
        lock(&self.compiled).insert(key, module.clone());
        Ok(module)
    }

    /// Stored UDF modules prepared for one job under `grant`: each with
    /// the grant's per-row cap, its functions checked (so a module that
    /// cannot serve them fails the job before it starts), and no instance
    /// yet; each query takes its own handle (`host::Host::query_udfs`).
    pub(crate) fn job_udfs(
        &self,
        modules: &[String],
        grant: &Grant,
    ) -> Result<Vec<unseen_sandbox::UdfModule>, DomainError> {
        let mut udfs = Vec::new();
        for sha in modules {
            let bytes = store::jobs::udf_module_bytes(&lock(&self.db), sha)?.ok_or_else(|| {
                DomainError::NotFound {
                    what: "UDF module",
                    id: sha.clone(),
                    list: "job submit --udf",
                }
            })?;
            let validated = self.validated(&bytes, ModuleKind::Udf)?;
            let module = unseen_sandbox::UdfModule::new(&self.sandbox, &validated)?
                .with_row_instructions(grant.udf_row_instructions);
            module.for_query().functions().map_err(DomainError::Udf)?;
            udfs.push(module);
        }
        Ok(udfs)
    }
}

pub(crate) fn module_kind_name(kind: ModuleKind) -> &'static str {
    match kind {
        ModuleKind::Job => "job",
        ModuleKind::Udf => "udf",
    }
}

/// `name(Float64, Float64) -> Float64`, as users and the ledger see a UDF.
pub(crate) fn udf_signature(d: &unseen_sandbox::ScalarUdfDecl) -> String {
    let args: Vec<String> = d.args.iter().map(ToString::to_string).collect();
    format!("{}({}) -> {}", d.name, args.join(", "), d.returns)
}
