//! Which nodes of a [`Graph`] run fused with a neighbour, decided once for every executor:
//! the eager forward pass ([`Graph::forward_with`]) and the reverse-mode engine (training
//! steps; the eval-mode Hessian passes behind PyHessian-style products, Yao et al. 2020).
//!
//! Two patterns are fused (both only with the fast kernels, never with candle's stock ops):
//! - a batch norm or a residual sum whose only reader is a ReLU runs with that ReLU in one
//!   pass; the ReLU node then passes its input through;
//! - in the eval-mode engine with running statistics, a convolution whose only reader is a
//!   batch norm takes the norm into its weight and bias (the norm node passes its input
//!   through), and the ReLU fused after that norm, if any, into its output.

use super::{Graph, NodeId, Op, ops};

/// The fused pairs of one pass over a graph.
#[derive(Debug, Clone)]
pub(crate) struct Fusion {
    /// Per node: how many input slots of later nodes read its value.
    pub(crate) readers: Vec<usize>,
    /// Per node: the ReLU fused after it (a batch norm or residual sum whose only reader is
    /// that ReLU, and which is not the output).
    pub(crate) relu: Vec<Option<NodeId>>,
    /// Per node: a ReLU already applied by the node before it (it passes its input through).
    pub(crate) relu_done: Vec<bool>,
    /// Per node: the batch norm folded into this convolution.
    pub(crate) bn: Vec<Option<NodeId>>,
    /// Per node: a batch norm folded into the convolution before it.
    pub(crate) bn_done: Vec<bool>,
}

impl Fusion {
    /// The fused pairs of `graph`: ReLUs that `relu_ok` accepts (the eval-mode engine: those
    /// with a frozen pattern) after batch norms and residual sums, and, when `fold_bn`,
    /// batch norms into the convolutions before them.
    pub(crate) fn new(graph: &Graph, fold_bn: bool, relu_ok: impl Fn(NodeId) -> bool) -> Fusion {
        let nodes = graph.nodes();
        let n = nodes.len();
        let mut readers = vec![0usize; n];
        for node in nodes {
            for &k in &node.inputs {
                readers[k] += 1;
            }
        }
        let mut fusion = Fusion {
            readers,
            relu: vec![None; n],
            relu_done: vec![false; n],
            bn: vec![None; n],
            bn_done: vec![false; n],
        };
        if ops::stock_ops() {
            return fusion;
        }
        for (id, node) in nodes.iter().enumerate() {
            match node.op {
                Op::Relu if relu_ok(id) => {
                    let src = node.inputs[0];
                    let fusable = matches!(nodes[src].op, Op::BatchNorm2d(_) | Op::Add);
                    if fusable && fusion.readers[src] == 1 && src != graph.output() {
                        fusion.relu[src] = Some(id);
                        fusion.relu_done[id] = true;
                    }
                }
                Op::BatchNorm2d(_) if fold_bn => {
                    let src = node.inputs[0];
                    if matches!(nodes[src].op, Op::Conv2d(_)) && fusion.readers[src] == 1 {
                        fusion.bn[src] = Some(id);
                        fusion.bn_done[id] = true;
                    }
                }
                _ => {}
            }
        }
        fusion
    }

    /// Whether node `id` is a batch norm that runs with the ReLU after it.
    pub(crate) fn bn_relu(&self, graph: &Graph, id: NodeId) -> bool {
        self.relu[id].is_some() && matches!(graph.nodes()[id].op, Op::BatchNorm2d(_))
    }
}

#[cfg(test)]
mod tests {
    use candle::Device;

    use super::Fusion;
    use crate::graph::{Conv2dSpec, GraphBuilder, ops};

    #[test]
    fn relus_fuse_after_their_only_source_and_norms_fold_only_when_asked() {
        let mut b = GraphBuilder::new(&[3, 8, 8], &Device::Cpu, 1);
        let conv = |b: &mut GraphBuilder, name: &str, x, cin| {
            b.conv2d(name, x, Conv2dSpec::new(cin, 4, 3, 1, 1, false))
                .unwrap()
        };
        let x = b.input();
        let c1 = conv(&mut b, "c1", x, 3);
        let n1 = b.batch_norm("bn1", c1).unwrap();
        let r1 = b.relu(n1).unwrap();
        let c2 = conv(&mut b, "c2", r1, 4);
        // Read by its ReLU and by the residual sum: not fused.
        let n2 = b.batch_norm("bn2", c2).unwrap();
        let r2 = b.relu(n2).unwrap();
        let s = b.add(r2, n2).unwrap();
        let r3 = b.relu(s).unwrap();
        let g = b.global_avg_pool(r3).unwrap();
        let g = b.flatten(g).unwrap();
        let out = b.linear("fc", g, 2, true).unwrap();
        let graph = b.finish(out).unwrap();
        let n = graph.nodes().len();

        let step = Fusion::new(&graph, false, |_| true);
        assert_eq!(step.readers[n2], 2);
        assert!(step.bn.iter().all(Option::is_none) && !step.bn_done.contains(&true));
        if ops::stock_ops() {
            assert!(step.relu.iter().all(Option::is_none));
            return;
        }
        let mut relu = vec![None; n];
        relu[n1] = Some(r1);
        relu[s] = Some(r3);
        assert_eq!(step.relu, relu);
        let done: Vec<usize> = (0..n).filter(|&i| step.relu_done[i]).collect();
        assert_eq!(done, [r1, r3]);
        assert!(step.bn_relu(&graph, n1) && !step.bn_relu(&graph, s));

        // The eval-mode engine: only ReLUs with a pattern fuse; both norms fold.
        let frozen = Fusion::new(&graph, true, |id| id != r3);
        relu[s] = None;
        assert_eq!(frozen.relu, relu);
        let mut bn = vec![None; n];
        bn[c1] = Some(n1);
        bn[c2] = Some(n2);
        assert_eq!(frozen.bn, bn);
        assert!(frozen.bn_done[n1] && frozen.bn_done[n2]);
    }
}
