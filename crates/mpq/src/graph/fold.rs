//! BatchNorm folding (as deployed integer models do, e.g. HAWQ-V3's `fix_BN`): every
//! `Conv2d → BatchNorm2d` pair whose conv output feeds only the BN becomes one conv with
//! `w' = w·γ/√(σ²+ε)` (per output channel) and `b' = (b − μ)·γ/√(σ²+ε) + β`, using the
//! running statistics. The folded graph computes the same eval-mode function.

use candle::Tensor;

use super::{Graph, Node, NodeId, Op, ParamKind, ParamStore};
use crate::Result;

impl Graph {
    /// A copy of the graph with its own copies of every parameter (a plain `clone` shares
    /// the variables, so training one would change the other).
    pub fn deep_copy(&self) -> Result<Graph> {
        let mut params = ParamStore::new(self.params.device());
        for p in self.params.iter() {
            params.insert(&p.name, p.var.as_tensor().copy()?, p.kind)?;
        }
        Graph::from_parts(
            self.nodes.clone(),
            self.output,
            self.input_shape.clone(),
            params,
        )
    }

    /// A copy of the graph with every foldable BatchNorm merged into its convolution;
    /// returns the folded graph and the `(conv, batchnorm)` name pairs that were merged.
    pub fn fold_batch_norm(&self) -> Result<(Graph, Vec<(String, String)>)> {
        let mut readers: Vec<Vec<NodeId>> = vec![Vec::new(); self.nodes.len()];
        for (id, n) in self.nodes.iter().enumerate() {
            for &i in &n.inputs {
                readers[i].push(id);
            }
        }
        // bn id -> conv id for every foldable pair.
        let mut bn_of_conv = vec![None; self.nodes.len()];
        let mut folded_bn = vec![false; self.nodes.len()];
        for (id, n) in self.nodes.iter().enumerate() {
            if let Op::BatchNorm2d(_) = n.op {
                let src = n.inputs[0];
                if matches!(self.nodes[src].op, Op::Conv2d(_))
                    && readers[src] == [id]
                    && src != self.output
                {
                    bn_of_conv[src] = Some(id);
                    folded_bn[id] = true;
                }
            }
        }
        let mut params = ParamStore::new(self.params.device());
        let mut new_id = vec![0usize; self.nodes.len()];
        let mut nodes: Vec<Node> = Vec::new();
        let mut pairs = Vec::new();
        for (id, n) in self.nodes.iter().enumerate() {
            if folded_bn[id] {
                new_id[id] = new_id[n.inputs[0]];
                continue;
            }
            let mut node = n.clone();
            node.inputs = n.inputs.iter().map(|&i| new_id[i]).collect();
            match (&n.op, bn_of_conv[id]) {
                (Op::Conv2d(spec), Some(bn)) => {
                    let bn_node = &self.nodes[bn];
                    let Op::BatchNorm2d(bspec) = bn_node.op else {
                        unreachable!("marked as BN")
                    };
                    let p =
                        |s: &str| -> Result<Tensor> { Ok(self.params.var(s)?.as_tensor().clone()) };
                    let bnn = &bn_node.name;
                    let scale = (p(&format!("{bnn}.weight"))?
                        / (p(&format!("{bnn}.running_var"))? + bspec.eps)?.sqrt()?)?;
                    let w = p(&format!("{}.weight", n.name))?;
                    let c = spec.out_channels;
                    let w = w.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
                    let b = match spec.bias {
                        true => p(&format!("{}.bias", n.name))?,
                        false => Tensor::zeros(c, w.dtype(), w.device())?,
                    };
                    let b = (((b - p(&format!("{bnn}.running_mean"))?)? * &scale)?
                        + p(&format!("{bnn}.bias"))?)?;
                    params.insert(&format!("{}.weight", n.name), w, ParamKind::Trainable)?;
                    params.insert(&format!("{}.bias", n.name), b, ParamKind::Trainable)?;
                    node.op = Op::Conv2d(super::Conv2dSpec {
                        bias: true,
                        ..*spec
                    });
                    pairs.push((n.name.clone(), bnn.clone()));
                }
                _ => {
                    for param in self
                        .params
                        .iter()
                        .filter(|q| q.name.rsplit_once('.').is_some_and(|(m, _)| m == n.name))
                    {
                        params.insert(&param.name, param.var.as_tensor().copy()?, param.kind)?;
                    }
                }
            }
            new_id[id] = nodes.len();
            nodes.push(node);
        }
        let graph =
            Graph::from_parts(nodes, new_id[self.output], self.input_shape.clone(), params)?;
        Ok((graph, pairs))
    }
}
