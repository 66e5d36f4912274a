//! The memory planner: before a run, decides for each model part (a transformer, a text encoder,
//! a VAE) how much of it stays on the GPU and how much streams from RAM while its node runs, so
//! that every node's peak fits the VRAM budget, streaming as few bytes per run as it can.
//!
//! Nodes describe memory in their estimates ([`crate::MemoryEstimate`]): a loader lists the
//! [`ModelPart`]s it makes, and a node that computes with a part lists a [`PartUse`] (how often
//! it reads the part's weights, and its working memory at the requested size). The planner knows
//! no model: parts are sizes, layers and keys.
//!
//! The model: every part's resident share stays on the GPU for the whole run (and between runs,
//! where the front end keeps it), so a node's peak is all resident shares, plus its own working
//! memory, plus copy buffers for the parts it streams ([`LAYERS_IN_FLIGHT`] layers each). The
//! resident room left by the largest node is handed to parts in order of how often they are
//! read per run, so the transformer (read every step) stays resident before the text encoder
//! (read once).

use crate::exec::format_bytes;

/// Layers of a streamed part held on the GPU at once: the running one and those being copied.
pub const LAYERS_IN_FLIGHT: u64 = 3;

/// Device memory the GPU runtime takes outside the memory pool the budget limits: the CUDA
/// context, the loaded kernels and cuBLAS's handle (655 MiB measured on an H200 with CUDA 13,
/// see docs/benchmarks.md; rounded up). The plan and the hard limit leave it out of the
/// budget, so the whole process stays within it.
pub const DEVICE_RESERVE_BYTES: u64 = 768 << 20;

/// A model part a loader produces (its weights as they will sit in VRAM).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModelPart {
    /// Identifies the part across nodes (the loader's file identity and the part's name).
    pub key: String,
    /// What people call it: `transformer`, `text encoder`, `VAE`.
    pub label: String,
    /// Bytes that must be resident whenever the part is used (embedders, norms, the parts that
    /// do not stream).
    pub fixed_bytes: u64,
    /// Bytes of the layers that may stream.
    pub layer_bytes: u64,
    /// The largest layer, in bytes (a copy buffer's size).
    pub largest_layer_bytes: u64,
}

/// A node's use of a part.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartUse {
    /// The [`ModelPart::key`].
    pub key: String,
    /// How many times one run of the node reads all the layers (sampling steps × CFG passes).
    pub passes: u64,
}

/// One node's memory needs as the planner sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeNeed {
    /// Node id.
    pub node: String,
    /// Node kind.
    pub kind: String,
    /// Parts it computes with.
    pub uses: Vec<PartUse>,
    /// Its own VRAM (activations, workspaces, outputs) at the requested size.
    pub working_bytes: u64,
}

/// Where a part lives during the run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Placement {
    /// Entirely on the GPU.
    Resident,
    /// `resident_bytes` of its layers on the GPU, the rest (`streamed_bytes`) copied in from
    /// page-locked RAM at every pass.
    Streamed {
        /// Layer bytes kept on the GPU.
        resident_bytes: u64,
        /// Layer bytes copied per pass.
        streamed_bytes: u64,
    },
}

/// The plan for one part.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartPlan {
    /// The part.
    pub part: ModelPart,
    /// Where it lives.
    pub placement: Placement,
    /// Passes per run (summed over the nodes that use it).
    pub passes: u64,
}

impl PartPlan {
    /// Layer bytes kept on the GPU.
    pub fn resident_layer_bytes(&self) -> u64 {
        match self.placement {
            Placement::Resident => self.part.layer_bytes,
            Placement::Streamed { resident_bytes, .. } => resident_bytes,
        }
    }

    /// Bytes copied to the GPU per run.
    pub fn streamed_bytes_per_run(&self) -> u64 {
        match self.placement {
            Placement::Resident => 0,
            Placement::Streamed { streamed_bytes, .. } => {
                streamed_bytes.saturating_mul(self.passes)
            }
        }
    }

    /// One line for people: `transformer: 7.2 GiB resident, 0.5 GiB streamed per pass (×4)`.
    pub fn describe(&self) -> String {
        let total = self.part.fixed_bytes + self.part.layer_bytes;
        match self.placement {
            Placement::Resident => {
                format!("{}: resident ({})", self.part.label, format_bytes(total))
            }
            Placement::Streamed {
                resident_bytes,
                streamed_bytes,
            } => format!(
                "{}: {} resident, {} streamed from RAM per pass (×{})",
                self.part.label,
                format_bytes(self.part.fixed_bytes + resident_bytes),
                format_bytes(streamed_bytes),
                self.passes
            ),
        }
    }
}

/// One node's expected VRAM peak under the plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodePeak {
    /// Node id.
    pub node: String,
    /// Node kind.
    pub kind: String,
    /// Expected peak bytes while it runs.
    pub peak_bytes: u64,
    /// Keys of the parts it computes with.
    pub parts: Vec<String>,
}

/// What will be resident and what will stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryPlan {
    /// The VRAM budget planned for.
    pub budget_bytes: u64,
    /// Of it, what the GPU runtime takes outside the planned allocations
    /// ([`DEVICE_RESERVE_BYTES`]).
    pub reserve_bytes: u64,
    /// Per part.
    pub parts: Vec<PartPlan>,
    /// Per node that uses a part or needs working memory.
    pub nodes: Vec<NodePeak>,
}

impl MemoryPlan {
    /// The most the process may allocate itself: the budget less the runtime's reserve (the
    /// hard limit set on the device).
    pub fn allocation_limit_bytes(&self) -> u64 {
        self.budget_bytes.saturating_sub(self.reserve_bytes)
    }

    /// The plan for the part `key`.
    pub fn part(&self, key: &str) -> Option<&PartPlan> {
        self.parts.iter().find(|p| p.part.key == key)
    }

    /// What the plan says about node `node`, for showing on it: a short badge (its expected
    /// peak, and how much of its model stays resident when some streams) and the details
    /// (where each part it uses lives). `None` when the plan does not mention the node.
    pub fn node_summary(&self, node: &str) -> Option<(String, String)> {
        let peak = self.nodes.iter().find(|n| n.node == node)?;
        let mut badge = format!("VRAM ≈ {}", format_bytes(peak.peak_bytes));
        let mut details = format!("expected peak {}", format_bytes(peak.peak_bytes));
        for part in peak.parts.iter().filter_map(|key| self.part(key)) {
            if let Placement::Streamed { resident_bytes, .. } = part.placement {
                let total = part.part.layer_bytes.max(1);
                badge.push_str(&format!(
                    " · {} % resident",
                    resident_bytes.saturating_mul(100) / total
                ));
            }
            details.push('\n');
            details.push_str(&part.describe());
        }
        Some((badge, details))
    }

    /// Bytes copied to the GPU per run, over all parts.
    pub fn streamed_bytes_per_run(&self) -> u64 {
        self.parts
            .iter()
            .map(PartPlan::streamed_bytes_per_run)
            .sum()
    }

    /// The plan for people, a line each: the budget, each part, each node's expected peak,
    /// and the bytes copied per run.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "memory plan for a VRAM budget of {} ({} of it kept for the GPU runtime):",
            format_bytes(self.budget_bytes),
            format_bytes(self.reserve_bytes)
        )];
        lines.extend(self.parts.iter().map(|p| format!("  {}", p.describe())));
        if !self.nodes.is_empty() {
            let peaks: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("{} {}", n.node, format_bytes(n.peak_bytes)))
                .collect();
            lines.push(format!("  expected peaks: {}", peaks.join(", ")));
        }
        if self.streams() {
            lines.push(format!(
                "  copied from RAM per run: {}",
                format_bytes(self.streamed_bytes_per_run())
            ));
        }
        lines
    }

    /// Whether anything streams.
    pub fn streams(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p.placement, Placement::Streamed { .. }))
    }
}

/// Why no plan fits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "node `{node}` ({kind}) needs at least {} of VRAM even with every model layer streamed from RAM \
     ({}), but the VRAM budget is {}; lower its width/height or batch, use a smaller model or \
     format, or raise --vram-budget",
    format_bytes(*needed_bytes), .detail, format_bytes(*budget_bytes)
)]
pub struct CannotFit {
    /// Node id.
    pub node: String,
    /// Node kind.
    pub kind: String,
    /// The least it needs.
    pub needed_bytes: u64,
    /// What that is made of.
    pub detail: String,
    /// The budget.
    pub budget_bytes: u64,
}

fn buffer_bytes(part: &ModelPart) -> u64 {
    part.layer_bytes
        .min(LAYERS_IN_FLIGHT.saturating_mul(part.largest_layer_bytes))
}

/// Plans `nodes` (in run order) with `parts` under `budget_bytes`. Parts no node uses are left
/// out of the plan.
pub fn plan(
    budget_bytes: u64,
    parts: &[ModelPart],
    nodes: &[NodeNeed],
) -> Result<MemoryPlan, CannotFit> {
    plan_with_reserve(budget_bytes, DEVICE_RESERVE_BYTES, parts, nodes)
}

/// [`plan`] keeping `reserve_bytes` of the budget for the GPU runtime.
pub fn plan_with_reserve(
    budget_bytes: u64,
    reserve_bytes: u64,
    parts: &[ModelPart],
    nodes: &[NodeNeed],
) -> Result<MemoryPlan, CannotFit> {
    let user_budget_bytes = budget_bytes;
    let budget_bytes = budget_bytes.saturating_sub(reserve_bytes);
    let used: Vec<&ModelPart> = parts
        .iter()
        .filter(|p| nodes.iter().any(|n| n.uses.iter().any(|u| u.key == p.key)))
        .collect();
    let passes = |key: &str| -> u64 {
        nodes
            .iter()
            .flat_map(|n| &n.uses)
            .filter(|u| u.key == key)
            .map(|u| u.passes.max(1))
            .sum()
    };
    let fixed_total: u64 = used.iter().map(|p| p.fixed_bytes).sum();
    // Per node: working memory plus copy buffers of the parts it uses that stream.
    let node_overhead = |streaming: &dyn Fn(&str) -> bool, n: &NodeNeed| -> u64 {
        let buffers: u64 = n
            .uses
            .iter()
            .filter(|u| streaming(&u.key))
            .filter_map(|u| used.iter().find(|p| p.key == u.key))
            .map(|p| buffer_bytes(p))
            .sum();
        n.working_bytes + buffers
    };

    // Feasibility: everything streamed; the node that needs the most is the one to name.
    let neediest = nodes
        .iter()
        .map(|n| (fixed_total + node_overhead(&|_| true, n), n))
        .max_by_key(|(needed, _)| *needed);
    if let Some((needed, n)) = neediest
        && needed > budget_bytes
    {
        let detail = format!(
            "{} of it working memory, {} resident model parts, {} copy buffers, {} for the GPU runtime",
            format_bytes(n.working_bytes),
            format_bytes(fixed_total),
            format_bytes(needed - fixed_total - n.working_bytes),
            format_bytes(reserve_bytes)
        );
        return Err(CannotFit {
            node: n.node.clone(),
            kind: n.kind.clone(),
            needed_bytes: needed + reserve_bytes,
            detail,
            budget_bytes: user_budget_bytes,
        });
    }

    // Most-read parts first, then the smaller (a small part made resident saves its copy
    // buffers for little room); the key breaks ties so plans are reproducible.
    let mut order: Vec<&ModelPart> = used.clone();
    order.sort_by(|a, b| {
        passes(&b.key)
            .cmp(&passes(&a.key))
            .then_with(|| a.layer_bytes.cmp(&b.layer_bytes))
            .then_with(|| a.key.cmp(&b.key))
    });
    let mut streaming: Vec<String> = used.iter().map(|p| p.key.clone()).collect();
    let mut resident: Vec<u64> = vec![0; order.len()];
    let worst = |streaming: &[String]| -> u64 {
        let is_streaming = |key: &str| streaming.iter().any(|k| k == key);
        nodes
            .iter()
            .map(|n| node_overhead(&is_streaming, n))
            .max()
            .unwrap_or(0)
    };
    for (i, p) in order.iter().enumerate() {
        // Whole, without copy buffers, if that fits with the parts after it still streaming.
        streaming.retain(|k| *k != p.key);
        if let Some(slot) = resident.get_mut(i) {
            *slot = p.layer_bytes;
        }
        let total = fixed_total + resident.iter().sum::<u64>() + worst(&streaming);
        if total <= budget_bytes {
            continue;
        }
        // Otherwise as much as the room left beside its copy buffers.
        streaming.push(p.key.clone());
        if let Some(slot) = resident.get_mut(i) {
            *slot = 0;
        }
        let room = budget_bytes
            .saturating_sub(fixed_total + resident.iter().sum::<u64>() + worst(&streaming));
        if let Some(slot) = resident.get_mut(i) {
            *slot = p.layer_bytes.min(room);
        }
    }

    let part_plans: Vec<PartPlan> = order
        .iter()
        .zip(&resident)
        .map(|(p, r)| PartPlan {
            part: (*p).clone(),
            placement: if *r >= p.layer_bytes {
                Placement::Resident
            } else {
                Placement::Streamed {
                    resident_bytes: *r,
                    streamed_bytes: p.layer_bytes - r,
                }
            },
            passes: passes(&p.key),
        })
        .collect();
    let resident_total: u64 = fixed_total
        + part_plans
            .iter()
            .map(PartPlan::resident_layer_bytes)
            .sum::<u64>();
    let is_streaming = |key: &str| {
        part_plans
            .iter()
            .any(|p| p.part.key == key && matches!(p.placement, Placement::Streamed { .. }))
    };
    let peaks = nodes
        .iter()
        .map(|n| NodePeak {
            node: n.node.clone(),
            kind: n.kind.clone(),
            peak_bytes: reserve_bytes + resident_total + node_overhead(&is_streaming, n),
            parts: n.uses.iter().map(|u| u.key.clone()).collect(),
        })
        .collect();
    Ok(MemoryPlan {
        budget_bytes: user_budget_bytes,
        reserve_bytes,
        parts: part_plans,
        nodes: peaks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn part(key: &str, fixed: u64, layers: u64, largest: u64) -> ModelPart {
        ModelPart {
            key: key.into(),
            label: key.into(),
            fixed_bytes: fixed,
            layer_bytes: layers,
            largest_layer_bytes: largest,
        }
    }

    fn need(node: &str, key: &str, passes: u64, working: u64) -> NodeNeed {
        NodeNeed {
            node: node.into(),
            kind: node.into(),
            uses: vec![PartUse {
                key: key.into(),
                passes,
            }],
            working_bytes: working,
        }
    }

    /// klein-4B in bf16 at 1024², four steps: the sizes `veetance bench gpu` measures.
    fn klein_4b() -> (Vec<ModelPart>, Vec<NodeNeed>) {
        (
            vec![
                part("te", 780 * MIB, 6900 * MIB, 195 * MIB),
                part("transformer", 40 * MIB, 7350 * MIB, 340 * MIB),
                part("vae", 0, 160 * MIB, 160 * MIB),
            ],
            vec![
                need("encode", "te", 1, 300 * MIB),
                need("sample", "transformer", 4, 700 * MIB),
                need("decode", "vae", 1, 1200 * MIB),
            ],
        )
    }

    fn placements(plan: &MemoryPlan) -> Vec<(String, u64)> {
        plan.parts
            .iter()
            .map(|p| {
                (
                    p.part.key.clone(),
                    match p.placement {
                        Placement::Resident => u64::MAX,
                        Placement::Streamed { resident_bytes, .. } => resident_bytes / MIB,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn everything_is_resident_when_it_fits() {
        let (parts, nodes) = klein_4b();
        let plan = plan_with_reserve(80 * GIB, 0, &parts, &nodes).unwrap();
        assert!(!plan.streams());
        assert_eq!(plan.streamed_bytes_per_run(), 0);
        for peak in &plan.nodes {
            assert!(peak.peak_bytes <= 80 * GIB);
        }
    }

    #[test]
    fn the_most_read_part_stays_resident_first() {
        let (parts, nodes) = klein_4b();
        for (budget, expected) in [
            // 16 GiB: the transformer (4 passes) resident, the text encoder partly streamed.
            (
                16 * GIB,
                vec![("transformer", u64::MAX), ("vae", u64::MAX), ("te", 6854)],
            ),
            // 12 GiB: the text encoder mostly streams.
            (
                12 * GIB,
                vec![("transformer", u64::MAX), ("vae", u64::MAX), ("te", 2758)],
            ),
            // 8 GiB: the transformer streams too; the text encoder streams entirely and the VAE
            // is moved in for Decode.
            (8 * GIB, vec![("transformer", 5652), ("vae", 0), ("te", 0)]),
        ] {
            let plan = plan_with_reserve(budget, 0, &parts, &nodes).unwrap();
            let expected: Vec<(String, u64)> = expected
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            assert_eq!(
                placements(&plan),
                expected,
                "budget {}",
                format_bytes(budget)
            );
            for peak in &plan.nodes {
                assert!(
                    peak.peak_bytes <= budget,
                    "{} peaks at {} over {}",
                    peak.node,
                    format_bytes(peak.peak_bytes),
                    format_bytes(budget)
                );
            }
        }
    }

    #[test]
    fn a_node_that_cannot_fit_even_streamed_is_refused_with_the_numbers() {
        let (parts, nodes) = klein_4b();
        let err = plan_with_reserve(GIB, 0, &parts, &nodes).unwrap_err();
        // Sample's working memory and three transformer blocks in flight need the most.
        assert_eq!(err.node, "sample");
        let message = err.to_string();
        assert!(message.contains("`sample`"), "{message}");
        assert!(message.contains("2.5 GiB"), "{message}");
        assert!(message.contains("1.0 GiB"), "{message}");
        assert!(message.contains("--vram-budget"), "{message}");
    }

    #[test]
    fn parts_nobody_uses_are_not_placed() {
        let (parts, nodes) = klein_4b();
        let only_sample: Vec<NodeNeed> = nodes.into_iter().filter(|n| n.node == "sample").collect();
        let plan = plan_with_reserve(8 * GIB, 0, &parts, &only_sample).unwrap();
        assert_eq!(
            placements(&plan),
            vec![("transformer".to_owned(), u64::MAX)]
        );
    }

    #[test]
    fn streamed_bytes_per_run_count_every_pass() {
        let parts = vec![part("t", 0, 1000, 100)];
        let nodes = vec![need("sample", "t", 4, 100)];
        let plan = plan_with_reserve(900, 0, &parts, &nodes).unwrap();
        // 900 − 100 working − 300 buffers = 500 resident, 500 streamed × 4 passes.
        assert_eq!(
            plan.parts[0].placement,
            Placement::Streamed {
                resident_bytes: 500,
                streamed_bytes: 500
            }
        );
        assert_eq!(plan.streamed_bytes_per_run(), 2000);
        assert_eq!(plan.nodes[0].peak_bytes, 900);
    }
}

#[cfg(test)]
mod reserve_tests {
    use super::*;

    #[test]
    fn the_runtime_reserve_comes_out_of_the_budget_and_is_in_every_peak() {
        let parts = vec![ModelPart {
            key: "t".into(),
            label: "transformer".into(),
            fixed_bytes: 0,
            layer_bytes: 1000,
            largest_layer_bytes: 100,
        }];
        let nodes = vec![NodeNeed {
            node: "sample".into(),
            kind: "Sample".into(),
            uses: vec![PartUse {
                key: "t".into(),
                passes: 1,
            }],
            working_bytes: 100,
        }];
        // 1100 fits without a reserve; with 200 reserved the transformer streams.
        let plan = plan_with_reserve(1100, 200, &parts, &nodes).unwrap();
        assert_eq!(plan.allocation_limit_bytes(), 900);
        assert!(plan.streams());
        assert!(plan.nodes[0].peak_bytes <= 1100);
        let err = plan_with_reserve(450, 200, &parts, &nodes).unwrap_err();
        assert_eq!(err.budget_bytes, 450);
        assert_eq!(err.needed_bytes, 600);
    }
}
