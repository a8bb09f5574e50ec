// The AegisKV dashboard: polls /cluster.json on the node that served the page and draws it.
// Read-only. Every value from the cluster is put in the page as text (textContent), never as
// HTML: keys in the hot-key list are user data.
"use strict";

const POLL_MS = 1500;
const PALETTE = ["#2b6cb0", "#2f855a", "#b7791f", "#9b2c2c", "#6b46c1", "#2c7a7b", "#c05621", "#97266d"];

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function bytes(count) {
  if (count === null || count === undefined) return "\u2014";
  const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
  for (const [unit, scale] of units) {
    if (count >= scale) return (count / scale).toFixed(1) + " " + unit;
  }
  return count + " B";
}

function micros(value) {
  if (value === null || value === undefined) return "\u2014";
  return value >= 1000 ? "\u2264" + (value / 1000).toFixed(value >= 10000 ? 0 : 1) + " ms" : "\u2264" + value + " \u00b5s";
}

function number(value, digits) {
  if (value === null || value === undefined) return "\u2014";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits || 0 });
}

function colours(nodes) {
  const byNode = {};
  nodes.map((node) => node.node_id).sort().forEach((id, index) => {
    byNode[id] = PALETTE[index % PALETTE.length];
  });
  return byNode;
}

function cell(field, content, numeric) {
  return element("td", { "data-field": field, className: numeric ? "num" : "" }, content);
}

function nodeRow(node, colour) {
  const status = node.status || {};
  const health = element("td", { "data-field": "health" }, element("span", { className: "badge " + node.health }, node.health));
  if (node.reason) health.append(element("span", { className: "reason" }, node.reason));
  const latency = status.latency_us;
  const memory = status.memory;
  const memoryCell = cell("memory", memory ? bytes(memory.used) + " / " + bytes(memory.limit) : "\u2014", true);
  if (memory && memory.limit) {
    const share = Math.min(100, (100 * memory.used) / memory.limit);
    const fill = element("span", {});
    fill.style.width = share.toFixed(1) + "%";
    memoryCell.append(element("span", { className: "bar" }, fill));
  }
  const replication = status.replication;
  const lag = replication
    ? number(replication.max_follower_lag_changes) + " changes, p99 " + micros(replication.lag_p99_us || null)
    : "\u2014";
  const shards = replication ? number(replication.shards_primary) + " / " + number(replication.shards_follower) : "\u2014";
  const name = element("td", { "data-field": "node" }, element("span", { className: "swatch" }), node.node_id);
  name.querySelector(".swatch").style.backgroundColor = colour;
  return element(
    "tr",
    { className: "node", "data-node": node.node_id, "data-health": node.health },
    name,
    health,
    cell("gossip", node.gossip),
    cell("ops", node.status ? number(status.ops_per_sec, 1) : "\u2014", true),
    cell("latency", latency ? [latency.p50, latency.p99, latency.p999].map(micros).join(" / ") : "\u2014", true),
    memoryCell,
    cell("keys", node.status ? number(status.keys) : "\u2014", true),
    cell("evictions", node.status ? number(status.evicted_keys) : "\u2014", true),
    cell("lag", node.status ? lag : "\u2014", true),
    cell("shards", node.status ? shards : "\u2014", true),
    cell("address", node.address || "\u2014"),
  );
}

function shardCell(shard, colourOf) {
  const primary = shard.primary;
  const square = element(
    "div",
    {
      className: "shard" + (primary ? "" : " no-primary"),
      "data-shard": String(shard.shard),
      "data-primary": primary || "",
      title: "slots " + shard.slots[0] + "\u2013" + shard.slots[1],
    },
    element("div", { className: "id" }, "#" + shard.shard + " " + (primary || "no primary")),
    element("div", { className: "followers" }, shard.followers.length ? shard.followers.join(", ") : "no followers"),
  );
  if (primary) square.style.backgroundColor = colourOf[primary] || "#4a5568";
  return square;
}

function render(view) {
  const colourOf = colours(view.nodes);
  const up = view.nodes.filter((node) => node.health === "up").length;
  document.getElementById("summary").textContent =
    view.nodes.length + " nodes (" + up + " up), " + view.shards.length + " shards, map epoch " + view.epoch +
    "; served by " + view.served_by + ", updated " + new Date(view.at * 1000).toLocaleTimeString();

  document.querySelector("#nodes tbody").replaceChildren(...view.nodes.map((node) => nodeRow(node, colourOf[node.node_id])));

  const legend = view.nodes.map((node) => {
    const swatch = element("span", { className: "swatch" });
    swatch.style.backgroundColor = colourOf[node.node_id];
    return element("span", { className: "item" }, swatch, node.node_id + " primary");
  });
  document.getElementById("legend").replaceChildren(...legend);
  document.getElementById("shard-grid").replaceChildren(...view.shards.map((shard) => shardCell(shard, colourOf)));

  const moves = [];
  for (const node of view.nodes) {
    for (const move of (node.status && node.status.moves) || []) {
      const progress = move.keys_total
        ? number(move.keys) + " / " + number(move.keys_total) + " keys (" + Math.floor((100 * move.keys) / move.keys_total) + "%)"
        : "\u2014";
      moves.push(element("tr", { className: "move", "data-shard": String(move.shard), "data-from": node.node_id, "data-to": move.to },
        element("td", { className: "num" }, move.shard), element("td", {}, node.node_id), element("td", {}, move.to),
        element("td", {}, move.state), element("td", { className: "num" }, progress),
        element("td", { className: "num" }, bytes(move.bytes))));
    }
  }
  document.querySelector("#moves tbody").replaceChildren(...moves);
  document.getElementById("moves-section").hidden = moves.length === 0;

  const hot = [];
  for (const node of view.nodes) {
    for (const entry of (node.status && node.status.hotkeys) || []) {
      hot.push(element("tr", { className: "hotkey", "data-node": node.node_id },
        element("td", {}, node.node_id), element("td", { className: "num" }, entry.rank),
        element("td", {}, entry.key), element("td", { className: "num" }, number(entry.freq))));
    }
  }
  document.querySelector("#hotkeys tbody").replaceChildren(...hot);
  document.getElementById("hotkeys-section").hidden = hot.length === 0;
  document.body.dataset.state = "loaded";
  // How many views this page drew: a test (and a curious operator) can see it keeps refreshing.
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
}

function lostContact(message) {
  const banner = document.getElementById("connection");
  banner.textContent = message;
  banner.hidden = !message;
  if (message && document.body.dataset.state !== "loaded") document.body.dataset.state = "error";
}

async function poll() {
  try {
    const response = await fetch("/cluster.json", { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) {
      lostContact("The node answered " + response.status + ": " + (await response.text()).trim());
    } else {
      render(await response.json());
      lostContact("");
    }
  } catch (error) {
    lostContact("No answer from the node serving this page (" + error + "); the figures below are old.");
  }
  setTimeout(poll, POLL_MS);
}

poll();
