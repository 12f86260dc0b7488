const $ = (id) => document.getElementById(id);
// The key travels in a header, never in the address; this tab's sessionStorage keeps it, localStorage the name.
$("api-key").value = sessionStorage.getItem("critic-api-key") || "";
$("api-key").addEventListener("input", () => sessionStorage.setItem("critic-api-key", $("api-key").value));
$("annotator").value = localStorage.getItem("critic-annotator") || "";
$("annotator").addEventListener("input", () => localStorage.setItem("critic-annotator", $("annotator").value.trim()));

let labels = [];
let current = null;      // the review shown
const given = [];        // this tab's labels, newest last: what undo takes back
let skipped = new Set(); // reviews this tab skipped

async function call(path, body) {
  const key = $("api-key").value;
  const options = {headers: Object.assign({"Content-Type": "application/json"}, key ? {"X-API-Key": key} : {})};
  if (body !== undefined) { options.method = "POST"; options.body = JSON.stringify(body); }
  const response = await fetch(path, options);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) {}
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.json();
}

function fail(error) { $("error").textContent = String(error.message || error); $("error").classList.remove("hidden"); }
function said(text) { $("said").textContent = text; $("error").classList.add("hidden"); }

function buttons() {
  $("classes").replaceChildren(...labels.map((name, i) => {
    const button = document.createElement("button");
    button.textContent = `${name} (${i + 1})`;
    button.dataset.label = name;
    button.onclick = () => give(name);
    return button;
  }));
}

async function next() {
  try {
    const items = await call(`/v1/label/next?n=${skipped.size + 1}`);
    current = items.find((item) => !skipped.has(item.id)) || null;
  } catch (error) { return fail(error); }
  if (!current) {
    $("text").textContent = "Nothing left to label.";
    $("reason").textContent = $("suggestion").textContent = "";
    return;
  }
  $("text").textContent = current.text;
  $("reason").textContent = `picked: ${current.reason}`;
  $("suggestion").textContent = current.suggestion === null ? "no model yet" :
    `the model says ${current.suggestion} (${(current.confidence * 100).toFixed(0)}% confident)`;
  for (const button of $("classes").children) {
    button.classList.toggle("suggested", button.dataset.label === current.suggestion);
  }
  if (current.suggestion !== null) words(current.id);
}

function colour(score) {
  if (score === null) return "";
  const alpha = Math.min(1, Math.abs(score)) * 0.55;
  return score > 0 ? `rgba(30,132,73,${alpha})` : `rgba(176,58,46,${alpha})`;
}

// The words that pushed the suggestion, coloured in place once they arrive (a second or so on a CPU)
async function words(id) {
  let explanation;
  try { explanation = await call(`/v1/label/why?id=${id}`); } catch (error) { return; }
  if (!explanation || !current || current.id !== id) return;
  const parts = [];
  let position = 0;
  for (const w of explanation.words) {
    parts.push(document.createTextNode(explanation.text.slice(position, w.start)));
    const span = document.createElement("span");
    span.textContent = explanation.text.slice(w.start, w.end);
    span.dataset.score = w.score;
    span.title = w.score === null ? "not read (cut by the window)" : `${w.score.toFixed(2)} towards ${explanation.label}`;
    if (w.score !== null) span.style.background = colour(w.score);
    parts.push(span);
    position = w.end;
  }
  parts.push(document.createTextNode(explanation.text.slice(position)));
  $("text").replaceChildren(...parts);
  $("legend").classList.remove("hidden");
}

async function give(label) {
  const annotator = $("annotator").value.trim();
  if (!annotator) { $("annotator").focus(); return fail(new Error("type your name first")); }
  if (!current) return;
  try {
    const answer = await call("/v1/label", {id: current.id, label, annotator});
    given.push({labelId: answer.label_id, label});
    said(`saved: ${label}`);
  } catch (error) { return fail(error); }
  await next();
  await progress();
}

async function undo() {
  const last = given.pop();
  if (!last) return said("nothing to undo");
  try {
    await call("/v1/label/undo", {label_id: last.labelId, annotator: $("annotator").value.trim()});
    said(`undone: ${last.label}`);
  } catch (error) { given.push(last); return fail(error); }
  skipped.clear();
  await next();
  await progress();
}

async function progress() {
  let state;
  try { state = await call("/v1/label/status"); } catch (error) { return fail(error); }
  if (!labels.length) { labels = state.labels; buttons(); }
  const rows = Object.entries(state.per_class).map(([name, count]) => {
    const row = document.createElement("tr");
    for (const cell of [name, count]) { const td = document.createElement("td"); td.textContent = cell; row.append(td); }
    return row;
  });
  $("counts").replaceChildren(...rows);
  const accuracy = state.accuracy;
  $("accuracy").textContent = accuracy === null ? "accuracy: no model yet" :
    `accuracy ${(accuracy.accuracy * 100).toFixed(1)}% (95%: ${(accuracy.low * 100).toFixed(1)}–` +
    `${(accuracy.high * 100).toFixed(1)}%, ${accuracy.reviews} reviews of the ${accuracy.from})`;
  $("model").textContent = `${state.labels_given} labels, ${state.unlabelled} reviews unlabelled, ` +
    `${state.queued} sent back by a server, ${state.disagreements} disagreements; model: ${state.model || "none yet"}`;
  const retrain = state.retrain;
  $("retrain-state").textContent = retrain.running ? `training round ${retrain.round}…` :
    (retrain.last_error ? `the last retrain failed, the model in use stays: ${retrain.last_error}` :
      (retrain.round ? `round ${retrain.round} in use (${retrain.last_seconds.toFixed(0)} s)` : "")) +
    (retrain.every ? ` · next every ${retrain.every} labels (${retrain.labels_since} so far)` : "");
}

$("skip").onclick = () => { if (current) skipped.add(current.id); next(); };
$("undo").onclick = undo;
$("retrain").onclick = async () => { try { await call("/v1/label/retrain", {}); } catch (e) { fail(e); } progress(); };
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
  const index = Number(event.key) - 1;
  if (index >= 0 && index < labels.length) give(labels[index]);
  else if (event.key === "s") $("skip").click();
  else if (event.key === "u") undo();
});
setInterval(progress, 5000);
progress().then(next);
