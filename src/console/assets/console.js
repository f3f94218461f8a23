// The console's only script: progressive, the pages work without it. It counts down to each
// card's default deny and keeps the approvals page live over server-sent events (a new card
// appears, one answered elsewhere goes), and a running agent task's transcript too (its
// entries appear as they are written; at its end the page reloads for its final facts). Served from the console itself; the CSP allows no
// other script and no inline one.
"use strict";

(function () {
  const transcript = document.getElementById("transcript");
  if (!transcript || !transcript.dataset.events || !window.EventSource) return;
  const source = new EventSource(transcript.dataset.events);
  source.addEventListener("entry", function (e) {
    // The server rendered (and escaped) the entry exactly as the page renders it.
    const t = document.createElement("template");
    t.innerHTML = e.data;
    const entry = t.content.querySelector(".entry");
    if (entry) transcript.appendChild(entry);
  });
  source.addEventListener("end", function () {
    source.close();
    location.reload();
  });
})();

(function () {
  const cards = document.getElementById("cards");
  const none = document.getElementById("none");
  const live = document.getElementById("live");

  function two(n) {
    return String(n).padStart(2, "0");
  }

  // "in 9:05", or that it is past.
  function tick() {
    const now = Date.now();
    for (const card of document.querySelectorAll(".card[data-expires]")) {
      const left = card.querySelector(".left");
      if (!left) continue;
      const ms = Number(card.dataset.expires) - now;
      if (ms <= 0) {
        left.textContent = " (expired: denied)";
        card.classList.add("expired");
        for (const b of card.querySelectorAll("button")) b.disabled = true;
      } else {
        const s = Math.floor(ms / 1000);
        left.textContent = " (in " + Math.floor(s / 60) + ":" + two(s % 60) + ")";
      }
    }
  }

  function emptiness() {
    if (none && cards) none.hidden = cards.querySelector(".card") !== null;
  }

  tick();
  setInterval(tick, 1000);

  if (!cards || !live || !window.EventSource) return;
  const source = new EventSource(live.dataset.events);
  source.addEventListener("open", function () {
    live.textContent = "Live: new cards appear here as they are asked for.";
  });
  source.addEventListener("error", function () {
    live.textContent = "Not live (reconnecting…): reload for changes.";
  });
  source.addEventListener("card", function (e) {
    // The server rendered (and escaped) the card exactly as the page renders it.
    const t = document.createElement("template");
    t.innerHTML = e.data;
    const card = t.content.querySelector(".card");
    if (!card || document.getElementById(card.id)) return;
    cards.prepend(card);
    emptiness();
    tick();
  });
  source.addEventListener("gone", function (e) {
    const card = document.getElementById(e.data);
    if (card) card.remove();
    emptiness();
  });
  source.addEventListener("reload", function () {
    location.reload();
  });
})();
