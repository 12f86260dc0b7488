const $ = (id) => document.getElementById(id);
// The key goes in a header, never in the address (where access logs and history would keep it); this tab's
// sessionStorage remembers it across reloads.
$("api-key").value = sessionStorage.getItem("critic-api-key") || "";
$("api-key").addEventListener("input", () => sessionStorage.setItem("critic-api-key", $("api-key").value));
const headers = (type) => {
  const key = $("api-key").value;
  return Object.assign({"Content-Type": type}, key ? {"X-API-Key": key} : {});
};

function show(tab) {
  for (const name of ["review", "csv"]) {
    $("view-" + name).classList.toggle("hidden", name !== tab);
    $("tab-" + name).setAttribute("aria-selected", String(name === tab));
  }
}
$("tab-review").onclick = () => show("review");
$("tab-csv").onclick = () => show("csv");

async function call(path, body, type = "application/json") {
  const response = await fetch(path, {method: "POST", headers: headers(type), body});
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) {}
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function colour(score) {
  if (score === null) return "";
  const alpha = Math.min(1, Math.abs(score)) * 0.55;
  return score > 0 ? `rgba(30,132,73,${alpha})` : `rgba(176,58,46,${alpha})`;
}

const minAccuracy = () => $("min-accuracy").value ? Number($("min-accuracy").value) : null;

function describeThreshold(chosen) {
  const target = `${(chosen.target * 100).toFixed(0)}%`;
  if (chosen.threshold === null) return `No confidence shows ${target} accuracy on the validation reviews: every answer is unsure.`;
  return `Answers at ${(chosen.threshold * 100).toFixed(1)}% confidence or more: ${(chosen.coverage * 100).toFixed(0)}% ` +
    `of the validation reviews, ${(chosen.accuracy * 100).toFixed(1)}% of them right (at least ${target} with 95% confidence).`;
}

$("analyse").onclick = async () => {
  const text = $("review").value;
  $("review-error").classList.add("hidden");
  $("analyse").disabled = true;
  try {
    const asked = minAccuracy();
    const request = asked === null ? {text} : {text, min_accuracy: asked};
    const answer = await (await call("/v1/predict", JSON.stringify(request))).json();
    const p = answer.predictions[0];
    const top = Object.entries(p.probabilities).reduce((a, b) => (b[1] > a[1] ? b : a));
    const verdict = $("verdict");
    verdict.textContent = p.label === "unsure"
      ? `unsure (${top[0]} ${(top[1] * 100).toFixed(1)}%)`
      : `${p.label} (${(p.probabilities[p.label] * 100).toFixed(1)}%)`;
    verdict.className = ["positive", "negative"].includes(p.label) ? p.label : "";
    $("threshold").textContent = answer.min_accuracy ? describeThreshold(answer.min_accuracy) : "";
    $("threshold").classList.toggle("hidden", !answer.min_accuracy);
    // Built from text nodes: label names come from the model's folder and are never parsed as HTML.
    $("probabilities").replaceChildren(...Object.entries(p.probabilities).flatMap(([label, value]) => {
      const caption = document.createElement("div");
      caption.className = "muted";
      caption.textContent = `${label} ${(value * 100).toFixed(1)}%`;
      const bar = document.createElement("div"), fill = document.createElement("div");
      bar.className = "bar";
      fill.style.width = `${value * 100}%`;
      fill.style.background = label === "negative" ? "var(--neg)" : label === "positive" ? "var(--pos)" : "#5d6d7e";
      bar.append(fill);
      return [caption, bar];
    }));
    $("result").classList.remove("hidden");
    const words = $("words");
    words.classList.add("hidden");
    $("legend").classList.add("hidden");
    if ($("explain").checked) {
      const explanation = await (await call("/v1/explain", JSON.stringify({text}))).json();
      words.replaceChildren();
      let position = 0;
      for (const w of explanation.words) {
        words.append(document.createTextNode(explanation.text.slice(position, w.start)));
        const span = document.createElement("span");
        span.textContent = w.word;
        span.dataset.score = w.score === null ? "" : w.score;
        if (w.score === null) span.className = "cut"; else span.style.background = colour(w.score);
        span.title = w.score === null ? "not read (outside the window)" : `score ${w.score.toFixed(2)}`;
        words.append(span);
        position = w.end;
      }
      words.append(document.createTextNode(explanation.text.slice(position)));
      words.classList.remove("hidden");
      $("legend").classList.remove("hidden");
    }
  } catch (error) {
    $("review-error").textContent = error.message;
    $("review-error").classList.remove("hidden");
  } finally {
    $("analyse").disabled = false;
  }
};

$("score").onclick = async () => {
  const file = $("csv-file").files[0];
  $("csv-error").classList.add("hidden");
  if (!file) { $("csv-error").textContent = "Choose a CSV file first."; $("csv-error").classList.remove("hidden"); return; }
  $("score").disabled = true;
  $("csv-summary").textContent = `Scoring ${file.name}…`;
  try {
    const column = $("csv-column").value.trim();
    const query = new URLSearchParams();
    if (column) query.set("text_column", column);
    if (minAccuracy() !== null) query.set("min_accuracy", String(minAccuracy()));
    const path = "/v1/score-csv" + (query.toString() ? `?${query}` : "");
    const scored = await (await call(path, await file.text(), "text/csv")).text();
    const link = $("download");
    link.href = URL.createObjectURL(new Blob([scored], {type: "text/csv"}));
    link.classList.remove("hidden");
    const rows = parseCsv(scored);
    const labelAt = rows[0].indexOf("label");
    const counts = {};
    for (const row of rows.slice(1)) counts[row[labelAt]] = (counts[row[labelAt]] || 0) + 1;
    $("csv-summary").textContent = `${rows.length - 1} rows scored: ` +
      Object.entries(counts).map(([label, n]) => `${n} ${label}`).join(", ") + ".";
    const table = $("csv-preview");
    table.replaceChildren();
    rows.slice(0, 6).forEach((row, i) => {
      const tr = table.insertRow();
      for (const cell of row) {
        const td = document.createElement(i ? "td" : "th");
        td.textContent = cell;
        tr.append(td);
      }
    });
  } catch (error) {
    $("csv-summary").textContent = "";
    $("csv-error").textContent = error.message;
    $("csv-error").classList.remove("hidden");
  } finally {
    $("score").disabled = false;
  }
};

function parseCsv(text) {
  // RFC 4180: quoted fields may hold commas, newlines and doubled quotes.
  const rows = [[]];
  let field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { rows[rows.length - 1].push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      rows[rows.length - 1].push(field); field = ""; rows.push([]);
    } else field += c;
  }
  if (field || rows[rows.length - 1].length) rows[rows.length - 1].push(field); else rows.pop();
  return rows;
}

$("review").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("analyse").click(); });

// With `critic serve --watch`: the recent answers' unsure share, class mix against validation's, and drift
async function watch() {
  const key = $("api-key").value;
  let seen;
  try {
    const response = await fetch("/v1/watch", {headers: key ? {"X-API-Key": key} : {}});
    if (!response.ok) return;
    seen = await response.json();
  } catch (error) { return; }
  $("watch").classList.remove("hidden");
  const percent = (x) => x === null || x === undefined ? "—" : `${(x * 100).toFixed(1)}%`;
  $("watch-summary").textContent = `${seen.answers} recent answers; unsure at ${seen.min_accuracy}: ` +
    `${percent(seen.unsure_share)}; drift from the training reviews (ROC AUC, 0.5 none): ` +
    (seen.drift_auc === null ? "not yet" : seen.drift_auc.toFixed(3));
  const header = document.createElement("tr");
  for (const name of ["class", "answers", "validation"]) {
    const th = document.createElement("th"); th.textContent = name; header.append(th);
  }
  const rows = Object.entries(seen.class_mix).map(([name, share]) => {
    const tr = document.createElement("tr");
    for (const cell of [name, percent(share), percent((seen.validation_mix || {})[name])]) {
      const td = document.createElement("td"); td.textContent = cell; tr.append(td);
    }
    return tr;
  });
  $("watch-mix").replaceChildren(header, ...rows);
  $("watch-warnings").textContent = seen.warnings.join(" · ");
}
watch();
setInterval(watch, 10000);
