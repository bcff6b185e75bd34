"""Every node's interactions in time order, and the last L of them before a time.

DyGLib's NeighborSampler ("recent" strategy) in tensors: each event (src, dst, t) is in both
endpoints' histories; a query (node, t) gets that node's most recent interactions with time
strictly before t, oldest first. PyG's LastNeighborLoader does not fit here: it keeps a fixed
buffer per node updated once per batch and returns a de-duplicated subgraph for message
passing, not the time-ordered sequence (partner, time, edge) that a sequence model reads.
"""
import torch

__all__ = ["InteractionHistory", "events_between"]


class InteractionHistory:
    """Built from a TemporalData (src, dst, t float64, msg, e_id) in time order.

    Entries are sorted by (node, time); `_key` = node * span + (time - t0) is then one sorted
    float64 array, so a query is one searchsorted for all nodes at once.
    """

    def __init__(self, data, num_nodes):
        if len(data) and (data.src.max() >= num_nodes or data.dst.max() >= num_nodes or data.src.min() < 0 or data.dst.min() < 0):
            raise ValueError(f"history: node ids must be in [0, {num_nodes})")
        self.num_nodes = num_nodes
        e = len(data)
        pair = lambda a, b: torch.stack([a, b], 1).flatten()  # event i -> entries 2i (src), 2i+1 (dst)
        node = pair(data.src, data.dst)
        order = torch.sort(node, stable=True).indices  # entries are in time order: stays so per node
        self.node = node[order]
        self.partner = pair(data.dst, data.src)[order]
        self.time = pair(data.t, data.t).double()[order]
        self.e_id = pair(data.e_id, data.e_id)[order]
        self.msg = data.msg
        self._row = pair(torch.arange(e), torch.arange(e))[order]  # row of the event in data
        self.t0 = float(data.t.min()) if e else 0.0
        self.span = (float(data.t.max()) - self.t0 + 1.0) * 2 if e else 1.0
        self._key = self.node.double() * self.span + (self.time - self.t0)
        self.start = torch.searchsorted(self._key, torch.arange(num_nodes).double() * self.span)

    def _end(self, nodes, times):
        """Per query: index one past the node's last entry with time < t."""
        t = (times.double() - self.t0).clamp(min=-0.5, max=self.span / 2)
        return torch.searchsorted(self._key, nodes.double() * self.span + t, side="left")

    def count_before(self, nodes, times):
        """[n] number of interactions of nodes[i] strictly before times[i]."""
        return self._end(nodes, times) - self.start[nodes]

    def last(self, nodes, times, length):
        """The last `length` interactions of each node before its time, oldest first, right-padded.

        Returns partner [n, length] (long, 0 at padding), time [n, length] (float64),
        msg [n, length, m], valid [n, length] (bool; the True ones are a prefix of each row).
        """
        if length < 1:
            raise ValueError(f"history: length must be >= 1, got {length}")
        shape = (len(nodes), length)
        if len(self._key) == 0:  # no events at all: every history is empty
            return (torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.float64),
                    torch.zeros(shape + (self.msg.shape[1],)), torch.zeros(shape, dtype=torch.bool))
        end = self._end(nodes, times)
        first = torch.maximum(self.start[nodes], end - length)
        idx = first[:, None] + torch.arange(length)
        valid = idx < end[:, None]
        idx = torch.where(valid, idx, torch.zeros_like(idx))
        partner = torch.where(valid, self.partner[idx], 0)
        time = torch.where(valid, self.time[idx], 0.0)
        msg = self.msg[self._row[idx]] * valid[..., None]
        return partner, time, msg, valid

def events_between(data, first, last):
    """[n, 2]: for event pairs (first[i], last[i]) with first < last, how many interactions each
    endpoint of the `last` event had strictly between the two (the distance, in that node's
    own history, from the `last` event back to the `first`; both endpoints must take part in
    the `first` event too, as a return's do in its promise)."""
    hist = InteractionHistory(data, int(torch.cat([data.src, data.dst]).max()) + 1)
    out = []
    for end_nodes in (data.src[last], data.dst[last]):
        out.append(hist.count_before(end_nodes, data.t[last]) - hist.count_before(end_nodes, data.t[first]) - 1)
    return torch.stack(out, 1)
