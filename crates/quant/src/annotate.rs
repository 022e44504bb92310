//! Annotation: which ops a preset quantizes, which values then carry Q/DQ, which share
//! parameters, and which constants are stored as integers (doc/quantization.md, section 3).

use std::collections::HashMap;

use octet_graph::ops::{self, QuantRule};
use octet_graph::pattern::Index;
use octet_graph::{Graph, QParams, QType, TypedGraph, ValueId};
pub use octet_runtime::lower::scalar_scale;
use regex::Regex;
use serde::Serialize;

/// What gets quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Linear, Conv, both attention matmuls and multiplies by a constant scalar; the rest float.
    Int8Gemm,
    /// Every op with a quantization rule.
    FullInt8,
}

/// Quantization choices.
#[derive(Clone, Debug)]
pub struct Options {
    pub preset: Preset,
    /// Weights per output channel (else per tensor).
    pub per_channel: bool,
    /// Nodes (by name) or op types that stay float.
    pub exclude: Vec<Regex>,
    /// Values (by name) that stay float: ops other than matrix products that produce or read
    /// them run in float; a matrix product that produces one writes float.
    pub float_values: Vec<String>,
    /// Migrate outlier scale from LayerNorms into the Linears after them (SmoothQuant).
    pub smooth: bool,
    /// Keep residual-stream values with outlier channels float.
    pub wide_residual: bool,
    /// Which Linear inputs are stored as 16-bit (uint16) codes ([`uint16_inputs`]); they need
    /// opset 21, to which the file is raised (`octet_onnx::opset`). An activation after a
    /// product whose output gets 16 bits runs float in the product's epilogue (as with
    /// `activation_epilogue`), quantized once.
    pub uint16_inputs: WideInputs,
    /// Linear inputs (by name) whose 8-bit grid keeps too little of their values on the
    /// calibration data ([`crate::outliers::COARSE_GRID_DB`]): with [`WideInputs::Measured`]
    /// those that float ops produce get 16 bits. Filled by `quantize` from the outlier pass.
    pub coarse_inputs: Vec<String>,
    /// Correct each Linear's bias for the mean error its quantized weights add (`b − E[x]·(Ŵ − W)`).
    pub bias_correction: bool,
    /// Softmax output grid (with `int8_softmax`): the fixed `[0, 1]` (scale 1/256) or
    /// calibrated `[0, max p]`.
    pub softmax_calibrated: bool,
    /// Quantize attention logits and probabilities to 8 bits too; by default they stay float
    /// between the two int8 attention matmuls ([`attention_core`]).
    pub int8_softmax: bool,
    /// Run the activation after a matrix product in the product's epilogue, in f32, quantized
    /// once ([`activation_inputs`]); by default the product is quantized and the activation runs
    /// as a 256-entry table, which is faster and as accurate on the real models of
    /// doc/quantization.md section 9.
    pub activation_epilogue: bool,
    /// 7-bit weights, `[−64, 64]` (ONNX Runtime's `reduce_range`): exact in `vpmaddubsw` kernels.
    pub reduce_range: bool,
    /// Quantize the residual stream too; by default it stays float ([`residual_stream`]).
    pub int8_residual: bool,
    /// Round each Linear's weights to lower its output error on the calibration inputs
    /// ([`crate::rounding`]) instead of each weight to its nearest code.
    pub adaptive_rounding: bool,
}

/// Which Linear inputs get 16-bit codes. A 16-bit input doubles its Linear's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WideInputs {
    /// None: every Linear input is 8-bit.
    Off,
    /// LayerNorm outputs that smoothing cannot reach because more than Linears read them (the
    /// residual stream of a post-LN encoder such as BERT is the LayerNorm's output; pre-LN
    /// models have none), and the outputs of other float ops that calibration measured coarse
    /// on 8 bits (`Options::coarse_inputs`). The default of full-int8.
    Measured,
    /// Those LayerNorm outputs and every output of another float op (the hidden activations
    /// after GELU, the attention context after a float `P·V`): the default of int8-gemm.
    FloatProduced,
}

impl WideInputs {
    pub fn default_for(preset: Preset) -> WideInputs {
        match preset {
            Preset::FullInt8 => WideInputs::Measured,
            Preset::Int8Gemm => WideInputs::FloatProduced,
        }
    }
}

impl Options {
    /// The defaults of `preset`: per-channel weights, every outlier remedy, the calibrated softmax grid.
    pub fn new(preset: Preset) -> Options {
        Options {
            preset,
            per_channel: true,
            exclude: Vec::new(),
            float_values: Vec::new(),
            smooth: true,
            wide_residual: true,
            uint16_inputs: WideInputs::default_for(preset),
            coarse_inputs: Vec::new(),
            bias_correction: true,
            softmax_calibrated: true,
            int8_softmax: false,
            activation_epilogue: false,
            reduce_range: false,
            int8_residual: false,
            adaptive_rounding: false,
        }
    }

    /// The largest weight code these options allow.
    pub fn weight_qmax(&self) -> f32 {
        if self.reduce_range {
            octet_graph::qparams::REDUCED_WEIGHT_QMAX
        } else {
            octet_graph::qparams::WEIGHT_QMAX
        }
    }
}

/// A set of imported nodes that quantizes as one op: a planned node with the nodes fused into
/// it, or a MatMul with the Add of its constant bias (a Linear).
#[derive(Clone, Debug, Serialize)]
pub struct Unit {
    pub name: String,
    pub op: String,
    pub rule: QuantRule,
    /// Index of the planned node the unit starts from.
    #[serde(skip)]
    pub planned: usize,
    /// Indices into the imported graph's nodes.
    pub nodes: Vec<usize>,
    /// Activation inputs and outputs (constants excluded).
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Activation input used as the right operand of a matrix product.
    pub right_operand: Option<ValueId>,
    pub selected: bool,
    /// Selected, with its outputs left float.
    pub float_output: bool,
    /// Why a unit is not quantized.
    pub reason: String,
    /// Not quantized in the file, but inside an int8 kernel of octet: the float softmax of int8
    /// attention ([`attention_core`]), an activation in a GEMM epilogue ([`activation_inputs`]).
    pub in_kernel: bool,
    /// Not quantized: part of the float residual stream ([`residual_stream`]).
    pub residual: bool,
    /// Not quantized: no int8 op reads its outputs.
    pub unread: bool,
}

/// A constant stored as integers behind a DequantizeLinear.
#[derive(Clone, Debug)]
pub struct ConstantSpec {
    /// Imported node index and input slot.
    pub node: usize,
    pub slot: usize,
    pub value: ValueId,
    pub kind: ConstantKind,
}

#[derive(Clone, Debug)]
pub enum ConstantKind {
    /// s8 symmetric weight, per channel along `axis` or per tensor. `matrix_output_axis` is the
    /// output-channel axis of a 2-D (Linear) weight, `None` for convolution kernels.
    Weight { axis: Option<usize>, matrix_output_axis: Option<usize> },
    /// int32 bias with scale `s_x · s_w` (eq. 7): `input` is the activation, `weight` the index
    /// of the weight among the constants.
    Bias { input: ValueId, weight: usize },
}

/// How a group's parameters are found.
#[derive(Clone, Debug)]
pub enum GroupKind {
    /// From calibration, of type `qtype`: S8 symmetric when a member is a right matmul operand,
    /// U16 asymmetric for [`uint16_inputs`], else U8 asymmetric.
    Observed {
        qtype: QType,
    },
    Fixed(QParams),
}

/// Values that share one set of parameters: `value(member) = factor · value(root)`.
#[derive(Clone, Debug)]
pub struct Group {
    pub members: Vec<(ValueId, f32)>,
    pub kind: GroupKind,
    pub tensor: TensorKind,
}

/// What a group's values are, by the op that produces them (ops that move data pass on their
/// input's kind); observers are chosen per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TensorKind {
    /// A graph input.
    Input,
    /// Add, Sub or Concat of activations: the residual stream.
    Residual,
    /// A LayerNorm output.
    Norm,
    /// A Linear, Conv or MatMul output.
    Matmul,
    /// An elementwise op's output: GELU and the other unary functions, a multiply by a constant
    /// vector (LayerScale), a binary op of one activation.
    Elementwise,
    /// A multiply by a constant scalar (the attention's `q · scale`): the input's range, scaled.
    Scaled,
    /// A Softmax output.
    Probabilities,
    /// A Softmax input (attention logits): its largest values decide the output.
    Logits,
}

/// The result of annotation.
#[derive(Clone, Debug)]
pub struct Annotation {
    pub units: Vec<Unit>,
    pub groups: Vec<Group>,
    pub constants: Vec<ConstantSpec>,
    /// For each imported node, the unit it belongs to.
    pub unit_of: Vec<Option<usize>>,
}

/// Union-find over values with a scale factor relative to the parent.
#[derive(Default)]
struct Shared {
    parent: HashMap<ValueId, (ValueId, f32)>,
}

impl Shared {
    fn find(&mut self, v: ValueId) -> (ValueId, f32) {
        match self.parent.get(&v).copied() {
            None => (v, 1.0),
            Some((p, f)) => {
                let (root, g) = self.find(p);
                self.parent.insert(v, (root, f * g));
                (root, f * g)
            }
        }
    }
    /// Records `value(b) = k · value(a)`.
    fn union(&mut self, a: ValueId, b: ValueId, k: f32) {
        let ((ra, fa), (rb, fb)) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent.insert(rb, (ra, k * fa / fb));
        }
    }
}

/// The attention cores of `typed`: for every `MatMul → [Mul, Div, Add, Sub] → Softmax → MatMul`
/// (the probabilities being the left operand of every product that reads them), the logits
/// from the first product to the Softmax and the probabilities. On 8 bits these lose what
/// pretrained attention needs: peaked heads put most logits several grid steps below the
/// maximum, and most probabilities of a 257-token row are below one step of a `[0, max p]` grid
/// (doc/quantization.md, section 9).
pub fn attention_core(typed: &TypedGraph) -> Vec<ValueId> {
    /// The values from a MatMul output to `v` through elementwise arithmetic, `v` included.
    fn logits(typed: &TypedGraph, ix: &Index, v: ValueId, depth: usize) -> Option<Vec<ValueId>> {
        let p = &typed.nodes[ix.producer(v)?];
        let path = match p.op.name() {
            "MatMul" => Some(Vec::new()),
            "Mul" | "Div" | "Add" | "Sub" if depth > 0 => {
                p.inputs.iter().flatten().filter(|&&i| !typed.fact(i).is_constant()).find_map(|&i| logits(typed, ix, i, depth - 1))
            }
            _ => None,
        };
        path.map(|mut path| {
            path.push(v);
            path
        })
    }
    let ix = Index::of_typed(typed);
    let mut core = Vec::new();
    for t in typed.nodes.iter().filter(|t| t.op.name() == "Softmax") {
        let (Some(x), Some(&p)) = (t.inputs.first().copied().flatten(), t.outputs.first()) else { continue };
        let readers: Vec<&octet_graph::Node> = ix.readers(p).iter().map(|&r| &typed.nodes[r]).collect();
        let into_products = !readers.is_empty()
            && !ix.is_output(p)
            && readers.iter().all(|n| n.op.name() == "MatMul" && n.inputs[0] == Some(p) && n.inputs.get(1) != Some(&Some(p)));
        if let Some(path) = logits(typed, &ix, x, 4).filter(|_| into_products) {
            core.extend(path);
            core.push(p);
        }
    }
    core
}

/// The outputs of matrix products (MatMul, Gemm, Conv, with their bias Add) that only an
/// activation with a float kernel reads (GELU, Erf, Tanh, Sigmoid): they stay float, so that the
/// product and its activation are quantized once, after the activation, and run as one int8
/// kernel with the activation in its epilogue (not as a table on 8-bit product outputs, which
/// rounds twice).
/// Each as `(product output, activation output)`.
pub fn activation_inputs(typed: &TypedGraph) -> Vec<(ValueId, ValueId)> {
    let ix = Index::of_typed(typed);
    let mut out = Vec::new();
    for t in &typed.nodes {
        let is_activation = t.op.downcast::<octet_graph::ops::elementwise::Unary>().is_some_and(|u| u.0.f32_kernel().is_some());
        let Some(x) = t.inputs.first().copied().flatten().filter(|_| is_activation) else { continue };
        let sole = ix.uses(x) == 1 && !ix.is_output(x);
        let Some(p) = ix.producer(x).map(|p| &typed.nodes[p]).filter(|_| sole) else { continue };
        let product = |n: &octet_graph::Node| matches!(n.op.name(), "MatMul" | "Gemm" | "Conv");
        let bias_add = p.op.name() == "Add"
            && p.inputs.iter().flatten().any(|&i| ix.producer(i).is_some_and(|q| product(&typed.nodes[q]) && ix.uses(i) == 1));
        if product(p) || bias_add {
            out.push((x, t.outputs[0]));
        }
    }
    out
}

/// The residual stream of `typed`: every Add of two activations whose sum a LayerNorm or another
/// such Add reads, its sum and its addends, and each addend's chain back through multiplies by
/// constants (LayerScale) to the matrix product that made it. Pretrained transformers carry
/// channels 20–100× larger than the rest there, so an 8-bit grid leaves the others a few levels,
/// and its error reaches every later block; in float it costs elementwise work only, the
/// products writing float from their epilogues.
pub fn residual_stream(typed: &TypedGraph) -> Vec<ValueId> {
    let ix = Index::of_typed(typed);
    let activation = |v: &ValueId| !typed.fact(*v).is_constant();
    let activations = |n: &octet_graph::Node| n.inputs.iter().flatten().copied().filter(activation).collect::<Vec<ValueId>>();
    // Nodes are in topological order: walking back, every reader of an Add is decided before it.
    let mut in_stream = vec![false; typed.nodes.len()];
    for i in (0..typed.nodes.len()).rev() {
        let n = &typed.nodes[i];
        if n.op.name() != "Add" || activations(n).len() != 2 {
            continue;
        }
        in_stream[i] = ix.readers(n.outputs[0]).iter().any(|&r| in_stream[r] || typed.nodes[r].op.name() == "LayerNormalization");
    }
    // The one activation a Mul or Div by constants (LayerScale, a scalar) scales.
    let scaled = |p: &octet_graph::Node| match activations(p)[..] {
        [x] if matches!(p.op.name(), "Mul" | "Div") && (p.op.name() == "Mul" || scalar_scale(typed, p).is_some()) => Some(x),
        _ => None,
    };
    let mut out = Vec::new();
    for n in typed.nodes.iter().zip(&in_stream).filter(|(_, &s)| s).map(|(n, _)| n) {
        out.push(n.outputs[0]);
        for mut v in activations(n) {
            out.push(v);
            while let Some(x) = ix.producer(v).filter(|_| ix.uses(v) == 1).and_then(|p| scaled(&typed.nodes[p])) {
                v = x;
                out.push(v);
            }
        }
    }
    out
}

/// Annotates `graph` specialised as `typed`.
pub fn annotate(graph: &Graph, typed: &TypedGraph, opts: &Options) -> Annotation {
    let index: HashMap<&str, usize> = graph.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    let is_const = |v: ValueId| typed.fact(v).is_constant();
    let is_float_activation = |v: ValueId| !is_const(v) && typed.fact(v).dtype == octet_graph::DType::F32;
    let readers = |v: ValueId| typed.nodes.iter().enumerate().filter(move |(_, n)| n.inputs.contains(&Some(v))).map(|(i, _)| i);

    // Values kept float, spread over data movement: a Reshape or Transpose of a float value is
    // float too, and so is what it moves.
    let mut float_set: std::collections::HashSet<ValueId> =
        graph.names.iter().enumerate().filter(|(_, n)| opts.float_values.contains(n)).map(|(v, _)| v).collect();
    let core: std::collections::HashSet<ValueId> =
        if opts.int8_softmax { Default::default() } else { attention_core(typed).into_iter().collect() };
    float_set.extend(&core);
    // A 16-bit input after an activation needs the activation float: in its product's epilogue.
    let coarse: std::collections::HashSet<ValueId> =
        opts.coarse_inputs.iter().filter_map(|n| typed.names.iter().position(|m| m == n)).collect();
    let in_epilogue = |y: ValueId| match opts.uint16_inputs {
        _ if opts.activation_epilogue => true,
        WideInputs::FloatProduced => true,
        WideInputs::Measured => coarse.contains(&y),
        WideInputs::Off => false,
    };
    let activation_in: std::collections::HashSet<ValueId> =
        activation_inputs(typed).into_iter().filter(|&(_, y)| in_epilogue(y)).map(|(x, _)| x).collect();
    float_set.extend(&activation_in);
    let spread = |set: &mut std::collections::HashSet<ValueId>| loop {
        let before = set.len();
        for t in typed.nodes.iter().filter(|t| ops::lookup(t.op.name()).is_some_and(|d| d.quant == QuantRule::SharesInput)) {
            let touched: Vec<ValueId> =
                t.inputs.iter().flatten().copied().chain(t.outputs.iter().copied()).filter(|&v| is_float_activation(v)).collect();
            if touched.iter().any(|v| set.contains(v)) {
                set.extend(touched);
            }
        }
        if set.len() == before {
            break;
        }
    };
    let mut stream: std::collections::HashSet<ValueId> =
        if opts.int8_residual { Default::default() } else { residual_stream(typed).into_iter().collect() };
    spread(&mut stream);
    float_set.extend(&stream);
    spread(&mut float_set);
    let mut units: Vec<Unit> = Vec::new();
    let mut constants: Vec<ConstantSpec> = Vec::new();
    let mut taken = vec![false; typed.nodes.len()];
    for (ti, t) in typed.nodes.iter().enumerate() {
        if taken[ti] {
            continue;
        }
        let def = ops::lookup(t.op.name()).expect("planned ops are registered");
        let mut members: Vec<usize> = std::iter::once(&t.name).chain(&t.fused).filter_map(|n| index.get(n.as_str()).copied()).collect();
        let mut outputs = t.outputs.clone();
        let mut name = t.name.clone();
        let mut op = t.op.name().to_string();
        let mut weight: Option<ConstantSpec> = None;
        let mut bias: Option<(usize, usize, ValueId)> = None;
        let me = index[t.name.as_str()];
        if def.quant == QuantRule::Matmul {
            let w = t.inputs.get(1).copied().flatten().filter(|&w| is_const(w));
            let axis = match (op.as_str(), w.map(|w| typed.fact(w).shape.len())) {
                ("MatMul", Some(2)) => Some(Some(1)),
                ("Gemm", Some(2)) => Some(Some(if graph_gemm_trans_b(t) { 0 } else { 1 })),
                ("Conv", Some(_)) => Some(Some(0)),
                _ => None,
            };
            if let (Some(w), Some(axis)) = (w, axis) {
                // Bias correction needs `y = x·W + b`: no Conv kernels, no scaled Gemm.
                let plain_gemm = t.op.downcast::<octet_graph::ops::nn::Gemm>().is_none_or(|g| g.alpha == 1.0 && g.beta == 1.0);
                let matrix_output_axis = axis.filter(|_| op != "Conv" && plain_gemm);
                let axis = if opts.per_channel { axis } else { None };
                weight = Some(ConstantSpec { node: me, slot: 1, value: w, kind: ConstantKind::Weight { axis, matrix_output_axis } });
                if let Some(b) = t.inputs.get(2).copied().flatten().filter(|&b| is_const(b) && typed.fact(b).shape.len() == 1) {
                    bias = Some((me, 2, b));
                } else if op == "MatMul" {
                    // A Linear: MatMul followed by the Add of a constant vector, read only there.
                    let out = t.outputs[0];
                    let rs: Vec<usize> = readers(out).collect();
                    if let [r] = rs.as_slice() {
                        let add = &typed.nodes[*r];
                        let other = add.inputs.iter().flatten().copied().find(|&v| v != out);
                        let n = typed.fact(w).shape[1];
                        if add.op.name() == "Add" && add.fused.is_empty() && !typed.outputs.contains(&out) {
                            if let Some(b) = other.filter(|&b| {
                                is_const(b) && typed.fact(b).shape.iter().product::<usize>() == n && typed.fact(b).shape.last() == Some(&n)
                            }) {
                                let slot = add.inputs.iter().position(|&v| v == Some(b)).unwrap();
                                let ai = index[add.name.as_str()];
                                taken[*r] = true;
                                members.push(ai);
                                outputs = add.outputs.clone();
                                name = add.name.clone();
                                op = "Linear".into();
                                bias = Some((ai, slot, b));
                            }
                        }
                    }
                }
            }
        }
        let inputs: Vec<ValueId> = t.inputs.iter().flatten().copied().filter(|&v| is_float_activation(v)).collect();
        let outputs: Vec<ValueId> = outputs.into_iter().filter(|&v| is_float_activation(v)).collect();
        let right_operand =
            (def.quant == QuantRule::Matmul).then(|| t.inputs.get(1).copied().flatten()).flatten().filter(|&v| is_float_activation(v));
        let scalar = scalar_scale(typed, t).is_some();
        let selected_by_preset = match opts.preset {
            Preset::FullInt8 => def.quant != QuantRule::NotQuantized,
            Preset::Int8Gemm => def.quant == QuantRule::Matmul || scalar,
        };
        let excluded = opts
            .exclude
            .iter()
            .find(|re| re.is_match(&op) || re.is_match(t.op.name()) || members.iter().any(|&m| re.is_match(&graph.nodes[m].name)));
        let float_value = |vs: &[ValueId]| vs.iter().find(|v| float_set.contains(v)).map(|&v| graph.names[v].clone());
        let wide = if def.quant == QuantRule::Matmul { None } else { float_value(&inputs).or_else(|| float_value(&outputs)) };
        let in_stream = def.quant != QuantRule::Matmul && inputs.iter().chain(&outputs).any(|v| stream.contains(v));
        let float_output = def.quant == QuantRule::Matmul && float_value(&outputs).is_some();
        let in_core = |vs: &[ValueId]| vs.iter().any(|v| core.contains(v));
        let float_probabilities = def.quant == QuantRule::Matmul && in_core(&inputs);
        let epilogue_activation = inputs.iter().any(|v| activation_in.contains(v));
        let core_op = float_probabilities || (def.quant != QuantRule::Matmul && in_core(&inputs));
        let in_kernel = selected_by_preset && excluded.is_none() && (core_op || epilogue_activation);
        let (selected, reason) = match (selected_by_preset, excluded) {
            (_, Some(re)) => (false, format!("excluded by --exclude '{re}'")),
            (true, None) if core_op => (false, "attention probabilities and logits stay float (--int8-softmax quantizes them)".into()),
            (true, None) if epilogue_activation => {
                (false, "runs in the epilogue of the product before it, quantized once after it (--activation-epilogue)".into())
            }
            (true, None) if in_stream => {
                (false, "residual stream: stays float, written by the products' epilogues (--int8-residual quantizes it)".into())
            }
            (true, None) if wide.is_some() => {
                (false, format!("'{}' is kept float (outlier channels: a wider residual stream)", wide.unwrap_or_default()))
            }
            (false, _) if def.quant == QuantRule::NotQuantized => (false, "no quantization rule: shape arithmetic or a Q/DQ op".into()),
            (false, _) => (false, format!("the {} preset keeps it float", preset_name(opts.preset))),
            (true, _) if inputs.is_empty() || outputs.is_empty() => (false, "no float activation input or output".into()),
            (true, _) => (true, String::new()),
        };
        if selected {
            if let Some(w) = weight {
                let wi = constants.len();
                constants.push(w);
                if let Some((node, slot, value)) = bias {
                    constants.push(ConstantSpec { node, slot, value, kind: ConstantKind::Bias { input: inputs[0], weight: wi } });
                }
            }
        }
        let residual = selected_by_preset && excluded.is_none() && !core_op && !epilogue_activation && in_stream;
        units.push(Unit {
            name,
            op,
            rule: def.quant,
            planned: ti,
            nodes: members,
            inputs,
            outputs,
            right_operand,
            selected,
            float_output: selected && float_output,
            reason,
            in_kernel,
            residual,
            unread: false,
        });
    }

    // Outputs that no int8 op reads (a graph output, the pooling after the last block, a value
    // that only float ops read) would only be rounded: a product writes them float from its
    // epilogue, any other op runs float.
    loop {
        let read_in_int8: std::collections::HashSet<ValueId> =
            units.iter().filter(|u| u.selected || u.in_kernel).flat_map(|u| u.inputs.iter().copied()).collect();
        let mut changed = false;
        for u in units.iter_mut().filter(|u| u.selected && !u.float_output) {
            if u.outputs.iter().any(|o| read_in_int8.contains(o)) {
                continue;
            }
            if u.rule == QuantRule::Matmul {
                u.float_output = true;
            } else {
                u.selected = false;
                u.unread = true;
                u.reason = "no int8 op reads its output: quantizing it would only round it".into();
            }
            changed = true;
        }
        if !changed {
            break;
        }
    }

    let mut unit_of = vec![None; graph.nodes.len()];
    for (u, unit) in units.iter().enumerate() {
        for &n in &unit.nodes {
            unit_of[n] = Some(u);
        }
    }

    // Groups: every activation input and output of a selected unit is quantized; ops that move
    // data share their input's parameters; a scalar multiply rescales them.
    let mut shared = Shared::default();
    let mut quantized: Vec<ValueId> = Vec::new();
    let mut fixed: HashMap<ValueId, QParams> = HashMap::new();
    let mut signed: Vec<ValueId> = Vec::new();
    for unit in units.iter().filter(|u| u.selected) {
        quantized.extend(&unit.inputs);
        if !unit.float_output {
            quantized.extend(&unit.outputs);
        }
        signed.extend(unit.right_operand);
        let t = &typed.nodes[unit.planned];
        match unit.rule {
            QuantRule::SharesInput => {
                for &i in &unit.inputs {
                    for &o in &unit.outputs {
                        shared.union(i, o, 1.0);
                    }
                }
            }
            QuantRule::FixedOutput if opts.softmax_calibrated => {}
            QuantRule::FixedOutput => {
                for &o in &unit.outputs {
                    fixed.insert(o, QParams::per_tensor(QType::U8, 1.0 / 256.0, 0));
                }
            }
            QuantRule::Observed => {
                if let Some((x, k)) = scalar_scale(typed, t) {
                    shared.union(x, unit.outputs[0], k);
                }
            }
            _ => {}
        }
    }
    quantized.sort_unstable();
    quantized.dedup();
    let mut by_root: HashMap<ValueId, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for &v in &quantized {
        let (root, f) = shared.find(v);
        let g = *by_root.entry(root).or_insert_with(|| {
            groups.push(Group { members: Vec::new(), kind: GroupKind::Observed { qtype: QType::U8 }, tensor: TensorKind::Input });
            groups.len() - 1
        });
        groups[g].members.push((v, f));
    }
    let mut produced_by: HashMap<ValueId, &Unit> = HashMap::new();
    for u in &units {
        for &o in &u.outputs {
            produced_by.insert(o, u);
        }
    }
    let softmax_inputs: Vec<ValueId> =
        units.iter().filter(|u| u.selected && u.rule == QuantRule::FixedOutput).flat_map(|u| u.inputs.iter().copied()).collect();
    for g in &mut groups {
        let producer = g.members.iter().filter_map(|(v, _)| produced_by.get(v)).find(|u| u.rule != QuantRule::SharesInput);
        g.tensor = match producer {
            _ if g.members.iter().any(|(v, _)| softmax_inputs.contains(v)) => TensorKind::Logits,
            None => TensorKind::Input,
            Some(u) => match (u.rule, u.op.as_str()) {
                (QuantRule::Matmul, _) => TensorKind::Matmul,
                (QuantRule::FixedOutput, _) => TensorKind::Probabilities,
                (_, "LayerNormalization") => TensorKind::Norm,
                (_, "Add" | "Sub" | "Concat") if u.inputs.len() >= 2 => TensorKind::Residual,
                _ if scalar_scale(typed, &typed.nodes[u.planned]).is_some() => TensorKind::Scaled,
                _ => TensorKind::Elementwise,
            },
        };
        if let Some((v, f)) = g.members.iter().find(|(v, _)| fixed.contains_key(v)) {
            g.kind = GroupKind::Fixed(fixed[v].scaled(1.0 / f));
        } else if g.members.iter().any(|(v, _)| signed.contains(v)) {
            g.kind = GroupKind::Observed { qtype: QType::S8 };
        }
    }
    if opts.uint16_inputs != WideInputs::Off {
        for g in uint16_inputs(&units, &groups, opts.uint16_inputs, &coarse) {
            groups[g].kind = GroupKind::Observed { qtype: QType::U16 };
        }
    }
    Annotation { units, groups, constants, unit_of }
}

/// The groups that get 16-bit codes under `Options::uint16_inputs`: u8 groups that only
/// quantized Linears read, as their input, and that (looking back through data movement of one
/// activation: the CLS token gathered from a LayerNorm is a LayerNorm's)
/// - a float LayerNorm produces whose output more than Linears read (a residual Add: post-LN
///   encoders). Smoothing moves a LayerNorm output's massive channels into the next weights
///   only where Linears alone read it; on 8 bits the other channels keep a few levels
///   (all-MiniLM-L6-v2, doc/quantization.md section 9), or
/// - another float op produces (the hidden activations after a float GELU, the attention
///   context after a float `P·V`: DINOv2-S, section 9), with [`WideInputs::FloatProduced`], or
///   with [`WideInputs::Measured`] when the value is in `coarse`.
pub fn uint16_inputs(units: &[Unit], groups: &[Group], which: WideInputs, coarse: &std::collections::HashSet<ValueId>) -> Vec<usize> {
    let mut producer: HashMap<ValueId, &Unit> = HashMap::new();
    let mut quantized_readers: HashMap<ValueId, Vec<&Unit>> = HashMap::new();
    let mut readers: HashMap<ValueId, Vec<&Unit>> = HashMap::new();
    for u in units {
        producer.extend(u.outputs.iter().map(|&o| (o, u)));
        for &i in &u.inputs {
            readers.entry(i).or_default().push(u);
            if u.selected {
                quantized_readers.entry(i).or_default().push(u);
            }
        }
    }
    let linear = |u: &&Unit| u.rule == QuantRule::Matmul && u.op != "Conv" && u.right_operand.is_none() && u.inputs.len() == 1;
    // Something other than a Linear or data movement reads the LayerNorm's output.
    let unsmoothed_norm = |u: &Unit| {
        u.outputs.iter().any(|o| readers.get(o).is_some_and(|r| r.iter().any(|r| !linear(r) && r.rule != QuantRule::SharesInput)))
    };
    let widened_by = |mut v: ValueId| {
        let measured_coarse = coarse.contains(&v);
        for _ in 0..8 {
            let Some(u) = producer.get(&v) else { return false };
            match (u.selected, u.rule, u.inputs.as_slice()) {
                (true, ..) => return false,
                _ if u.op == "LayerNormalization" => return unsmoothed_norm(u),
                (false, QuantRule::SharesInput, [x]) => v = *x,
                (false, QuantRule::SharesInput, _) => return false,
                _ => return which == WideInputs::FloatProduced || (which == WideInputs::Measured && measured_coarse),
            }
        }
        false
    };
    let wide = |v: ValueId| quantized_readers.get(&v).is_some_and(|r| r.iter().all(linear)) && widened_by(v);
    let eight_bit = |g: &Group| matches!(g.kind, GroupKind::Observed { qtype: QType::U8 });
    groups.iter().enumerate().filter(|(_, g)| eight_bit(g) && g.members.iter().all(|&(v, _)| wide(v))).map(|(i, _)| i).collect()
}

fn graph_gemm_trans_b(t: &octet_graph::Node) -> bool {
    t.op.downcast::<octet_graph::ops::nn::Gemm>().is_some_and(|g| g.trans_b)
}

pub fn preset_name(p: Preset) -> &'static str {
    match p {
        Preset::Int8Gemm => "int8-gemm",
        Preset::FullInt8 => "full-int8",
    }
}
