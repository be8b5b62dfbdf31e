// The shop's page, enhanced: checks the form with the server's own rules and messages, places
// orders through the JSON API, follows each order until it reaches the totals, and polls the
// totals. Without this script the page still works as a plain form.
(() => {
  "use strict";

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  const form = $("#order-form");
  const merchant = $("#merchant");
  if (!form || !merchant) return;

  const ORDERS_URL = form.dataset.ordersUrl;
  const MAX_QUANTITY = Number(form.dataset.maxQuantity);
  const STATS_URL = merchant.dataset.statsUrl;
  const POLL_MS = Number(merchant.dataset.pollMs) || 2000;
  const ORDER_POLL_DEADLINE_MS = 120000;
  const FIELDS = ["product", "quantity", "unitPrice"];

  // ---- numbers, kept exact: money travels as decimal strings, sums as BigInt cents ----

  const DIGITS = /^[0-9]{1,16}$/;
  const MONEY = /^([0-9]{1,16})(?:\.([0-9]{1,16}))?$/;

  function toCents(text) {
    const match = MONEY.exec(String(text).trim());
    if (!match) return null;
    const fraction = match[2] || "";
    if (/[^0]/.test(fraction.slice(2))) return null; // more than 2 decimal places that count
    return BigInt(match[1]) * 100n + BigInt((fraction + "00").slice(0, 2));
  }
  const MAX_PRICE_CENTS = toCents(form.dataset.maxUnitPrice);

  function group(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }
  function formatQuantity(value) {
    return group(String(Math.trunc(Number(value) || 0)));
  }
  function formatCents(cents) {
    const text = cents.toString().padStart(3, "0");
    return group(text.slice(0, -2)) + "." + text.slice(-2);
  }
  function formatMoney(value) {
    const cents = toCents(value);
    return cents === null ? String(value) : formatCents(cents);
  }

  function age(timestamp) {
    if (!timestamp) return "no orders yet";
    const moment = Date.parse(timestamp);
    if (Number.isNaN(moment)) return "unknown";
    const seconds = Math.floor((Date.now() - moment) / 1000);
    if (seconds < 5) return "just now";
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
    return new Date(moment).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  // ---- the form: the same rules as cqrs_common.domain, the server's messages ----

  const controls = {
    product: $("#field-product"),
    quantity: $("#quantity"),
    unitPrice: $("#unitPrice"),
  };
  const errorFor = (name) => $(`[data-error-for="${name}"]`);
  const productChoices = $$('input[name="product"]', form).map((input) => input.value);

  function valueOf(name) {
    if (name === "product") {
      const checked = $('input[name="product"]:checked', form);
      return checked ? checked.value : "";
    }
    return controls[name].value.trim();
  }

  function problemWith(name) {
    const control = controls[name];
    const value = valueOf(name);
    if (name === "product") {
      if (!value) return control.dataset.msgMissing;
      return productChoices.includes(value) ? "" : control.dataset.msgInvalid;
    }
    if (name === "quantity") {
      if (control.validity.badInput || !DIGITS.test(value)) return control.dataset.msgInvalid;
      const quantity = Number(value);
      return quantity >= 1 && quantity <= MAX_QUANTITY ? "" : control.dataset.msgInvalid;
    }
    const cents = toCents(value);
    return cents !== null && cents <= MAX_PRICE_CENTS ? "" : control.dataset.msgInvalid;
  }

  function showFieldError(name, message) {
    const control = controls[name];
    errorFor(name).textContent = message || "";
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
    if (control.setCustomValidity) control.setCustomValidity(message || "");
  }

  function check(name) {
    const message = problemWith(name);
    showFieldError(name, message);
    return !message;
  }

  const formError = $("#form-error");
  const formErrorText = $("#form-error-text");
  function showFormError(message) {
    formErrorText.textContent = message || "";
    formError.hidden = !message;
  }

  const lineTotal = $("#line-total");
  const lineTotalValue = $("#line-total-value");
  function updateLineTotal() {
    const quantity = valueOf("quantity");
    const cents = toCents(valueOf("unitPrice"));
    const ok = !problemWith("quantity") && cents !== null && cents <= MAX_PRICE_CENTS;
    lineTotalValue.textContent = ok ? formatCents(BigInt(quantity) * cents) : "–";
  }

  // Our own messages replace the browser's bubbles, so they read like the server's.
  form.noValidate = true;
  lineTotal.hidden = false;
  updateLineTotal();

  // A field is first checked on submit, then again as it is edited: checking on blur would
  // move the button under a pointer that is about to click it.
  for (const name of FIELDS) {
    const target = name === "product" ? form : controls[name];
    target.addEventListener("change", () => {
      if (name === "product" || errorFor(name).textContent) check(name);
      updateLineTotal();
    });
    if (name !== "product") {
      controls[name].addEventListener("input", () => {
        if (errorFor(name).textContent) check(name); // clear the message as soon as it is fixed
        updateLineTotal();
      });
    }
  }

  // ---- placing an order ----

  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes); // randomUUID needs a secure context; this does not
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  let pending = null; // {key, body}: a retry of the same order reuses its key
  let busy = false;
  const button = $("#place-order");

  function setBusy(on) {
    busy = on;
    button.setAttribute("aria-busy", String(on));
    button.textContent = on ? "Placing…" : "Place order";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    const bad = FIELDS.filter((name) => !check(name));
    if (bad.length) {
      showFormError(`Please correct the ${bad.length === 1 ? "field" : "fields"} marked below.`);
      (bad[0] === "product" ? $('input[name="product"]', form) : controls[bad[0]]).focus();
      return;
    }
    showFormError("");
    const order = {
      product: valueOf("product"),
      quantity: Number(valueOf("quantity")),
      unitPrice: valueOf("unitPrice"),
    };
    const body = JSON.stringify(order);
    if (!pending || pending.body !== body) pending = { key: newKey(), body };
    setBusy(true);
    try {
      const response = await fetch(ORDERS_URL, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "Idempotency-Key": pending.key,
        },
        body,
      });
      if (response.ok) {
        const data = await response.json();
        pending = null;
        orderPlaced(data.orderId, order);
      } else if (response.status < 500) {
        pending = null; // refused: nothing was stored, the next try is a new order
        showProblem(await response.json().catch(() => null), response.status);
      } else {
        showFormError(
          `The shop could not take the order just now (${response.status}). ` +
            "Try again: it will not be placed twice.",
        );
      }
    } catch {
      showFormError("The shop could not be reached. Try again: the order will not be placed twice.");
    } finally {
      setBusy(false);
    }
  });

  function showProblem(problem, status) {
    const params = (problem && problem["invalid-params"]) || [];
    const onFields = params.filter((p) => FIELDS.includes(p.name));
    for (const p of onFields) showFieldError(p.name, sentence(p.reason));
    if (onFields.length) {
      showFormError(`Please correct the ${onFields.length === 1 ? "field" : "fields"} marked below.`);
      const first = onFields[0].name;
      (first === "product" ? $('input[name="product"]', form) : controls[first]).focus();
    } else {
      const detail = (problem && (problem.detail || problem.title)) || `error ${status}`;
      showFormError(sentence(detail));
    }
  }

  function sentence(message) {
    const text = String(message || "").trim();
    if (!text) return text;
    const capital = text[0].toUpperCase() + text.slice(1);
    return /[.!?]$/.test(capital) ? capital : capital + ".";
  }

  // ---- following orders until they reach the totals ----

  const statusRegion = $("#order-status");
  const recent = $("#recent");
  const recentList = $("#recent-list");
  const badges = new Map(); // orderId -> badge element

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    for (const child of children) node.append(child);
    return node;
  }

  function setOrderNotice(orderId, status) {
    const kind = status === "counted" ? "ok" : status === "pending" ? "info" : "warn";
    const tail = {
      counted: " is counted in the totals.",
      pending: " is stored; it will reach the totals in a moment.",
      unknown: " is stored, but it has not reached the totals yet. They will show it once it does.",
    }[status];
    const notice = el(
      "div",
      { class: `notice notice-${kind}`, id: "placed", "data-order-id": orderId, "data-status": status },
      el("strong", {}, "Order placed."),
      el("span", {}, "Order ", el("code", {}, orderId), tail),
    );
    statusRegion.replaceChildren(notice);
  }

  function setBadge(orderId, status) {
    const badge = badges.get(orderId);
    if (!badge) return;
    badge.className = `badge badge-${status}`;
    badge.textContent = status === "unknown" ? "not yet" : status;
  }

  function orderPlaced(orderId, order) {
    const badge = el("span", { class: "badge badge-pending" }, "pending");
    badges.set(orderId, badge);
    const what = `${formatQuantity(order.quantity)} × ${order.product} at ${formatMoney(order.unitPrice)}`;
    const item = el("li", { "data-order-id": orderId }, el("span", {}, what), badge);
    recentList.prepend(item);
    while (recentList.children.length > 5) recentList.lastElementChild.remove();
    recent.hidden = false;
    setOrderNotice(orderId, "pending");
    followOrder(orderId);
  }

  function followOrder(orderId) {
    const started = Date.now();
    let delay = 300;
    const poll = async () => {
      let status = "pending";
      try {
        const response = await fetch(`${ORDERS_URL}/${encodeURIComponent(orderId)}`, {
          headers: { Accept: "application/json" },
          cache: "no-store",
        });
        if (response.ok) status = (await response.json()).status;
      } catch {
        // the read side is away; keep trying until the deadline
      }
      if (status === "counted") {
        setBadge(orderId, "counted");
        if (statusRegion.querySelector(`[data-order-id="${CSS.escape(orderId)}"]`)) {
          setOrderNotice(orderId, "counted");
        }
        refreshStats();
        return;
      }
      if (Date.now() - started > ORDER_POLL_DEADLINE_MS) {
        setBadge(orderId, "unknown");
        return;
      }
      delay = Math.min(delay * 1.5, 3000);
      setTimeout(poll, delay);
    };
    setTimeout(poll, delay);
  }

  // An order placed by the plain form (or a reload) may still be on its way.
  const placed = $("#placed");
  if (placed && placed.dataset.status !== "counted") {
    const orderId = placed.dataset.orderId;
    setOrderNotice(orderId, "pending");
    followOrder(orderId);
  }

  // ---- the merchant's totals, polled ----

  const live = $("#live");
  const liveText = $("#live-text");
  const statsNotice = $("#stats-notice");
  const ordersCounted = $("#orders-counted");
  const updatedAt = $("#updated-at");
  const pipelineLine = $("#pipeline");
  const announcer = $("#totals-live");
  let lastSignature = null;
  let statsSeq = 0;
  let statsTimer = 0;

  function setLive(state, text) {
    live.dataset.state = state;
    liveText.textContent = text;
  }

  function renderStats(stats) {
    const products = stats.products || {};
    const rows = $$("#totals tbody tr").map((tr) => {
      const name = tr.dataset.product;
      const entry = products[name] || {};
      const quantity = Number(entry.quantity) || 0;
      const total = entry.totalPrice == null ? "0" : String(entry.totalPrice);
      return { tr, name, quantity, total };
    });
    // Bars are geometry, not money: a float is fine for their lengths.
    const topQuantity = Math.max(0, ...rows.map((r) => r.quantity));
    const topTotal = Math.max(0, ...rows.map((r) => Number(r.total) || 0));
    const share = (value, top) => (top > 0 ? Math.round((value * 10000) / top) / 100 : 0);
    for (const r of rows) {
      const quantityText = formatQuantity(r.quantity);
      const totalText = formatMoney(r.total);
      $('[data-metric="quantity"]', r.tr).textContent = quantityText;
      $('[data-metric="totalPrice"]', r.tr).textContent = totalText;
      const bars = {
        quantity: [share(r.quantity, topQuantity), quantityText],
        totalPrice: [share(Number(r.total) || 0, topTotal), totalText],
      };
      for (const [metric, [width, text]] of Object.entries(bars)) {
        const selector = `[data-product="${r.name}"][data-metric="${metric}"]`;
        $(`rect${selector}`).setAttribute("width", String(width));
        $(`.bar-value${selector}`).textContent = text;
      }
    }
    ordersCounted.textContent = formatQuantity(stats.ordersCounted);
    if (stats.updatedAt) {
      updatedAt.setAttribute("datetime", stats.updatedAt);
      updatedAt.title = stats.updatedAt;
    } else {
      updatedAt.removeAttribute("datetime");
    }
    updatedAt.textContent = age(stats.updatedAt);
    renderPipeline(stats.pipeline);

    const summary =
      rows.map((r) => `${r.name} ${formatQuantity(r.quantity)} for ${formatMoney(r.total)}`).join(", ") +
      `; ${formatQuantity(stats.ordersCounted)} orders counted`;
    if (lastSignature !== null && summary !== lastSignature) announcer.textContent = `Totals updated: ${summary}.`;
    lastSignature = summary;
  }

  // How far behind the totals are, and what is stuck: the words of page.pipeline_sentence.
  function renderPipeline(pipeline) {
    if (!pipeline) {
      pipelineLine.hidden = true;
      return;
    }
    const behind = Number(pipeline.behind) || 0;
    const stuck = Number(pipeline.stuck) || 0;
    const unlogged = Number(pipeline.countedNotLogged) || 0;
    let words = "Up to date: every order placed is counted.";
    if (unlogged > 0) {
      words = `The totals count ${formatQuantity(unlogged)} order${unlogged === 1 ? "" : "s"}` +
        " the order log does not hold: the write store has lost orders.";
    } else if (behind > 0) {
      words = `${formatQuantity(behind)} order${behind === 1 ? "" : "s"} not counted yet`;
      if (stuck) words += `; ${formatQuantity(stuck)} stuck, waiting for an operator`;
      words += ".";
    }
    pipelineLine.textContent = words;
    pipelineLine.toggleAttribute("data-stuck", stuck > 0);
    pipelineLine.hidden = false;
  }

  async function refreshStats() {
    clearTimeout(statsTimer);
    const seq = ++statsSeq;
    if (!document.hidden) {
      try {
        const response = await fetch(STATS_URL, { headers: { Accept: "application/json" }, cache: "no-store" });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const stats = await response.json();
        if (seq !== statsSeq) return; // a newer refresh is under way
        renderStats(stats);
        setLive("live", "Live");
        statsNotice.hidden = true;
      } catch {
        if (seq !== statsSeq) return;
        setLive("offline", "Reconnecting…");
        statsNotice.textContent = "The totals are unavailable right now; retrying. Orders can still be placed.";
        statsNotice.hidden = false;
      }
    }
    statsTimer = setTimeout(refreshStats, POLL_MS);
  }

  // The freshness line ticks between polls.
  setInterval(() => {
    const stamp = updatedAt.getAttribute("datetime");
    if (stamp) updatedAt.textContent = age(stamp);
  }, 1000);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshStats();
  });
  refreshStats();
})();
