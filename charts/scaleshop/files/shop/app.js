// The shop: a hash router (#/, #/p/<id>, #/sell, #/signin, ...) and one view per page, each built
// from the public API only (api.js), plus the "Under the hood" table of the page's API calls.

import { api, describe, newPage, onCall, saveSession, session, waitForJob } from "./api.js";
import { field, h, price, stars, when } from "./dom.js";

const main = document.getElementById("main");
const SORTS = [["newest", "Newest"], ["price_asc", "Price, low to high"], ["price_desc", "Price, high to low"],
  ["rating", "Best rated"], ["name", "Name"]];
const PER_PAGE = 12;

// ---- page frame ------------------------------------------------------------------------------

function notice(text, kind = "info") {
  const box = document.getElementById("notice");
  box.replaceChildren(text ? h("p", { class: `notice ${kind}` }, text) : "");
}

// A message for the next page (shown once the navigation has happened).
let flashed = "";
function flash(text) { flashed = text; }

function errorBox(error) {
  return h("p", { class: "notice error", role: "alert" }, describe(error));
}

function show(title, ...content) {
  document.title = `${title} · Scaleshop`;
  main.replaceChildren(h("h1", { tabindex: "-1" }, title), ...content);
}

function renderNav() {
  const me = session();
  const link = (href, text) => h("li", {}, h("a", { href }, text));
  const items = [link("#/", "Shop")];
  if (me) {
    items.push(link("#/sell", "Sell"), link("#/import", "Import"), link("#/me", "My account"),
      h("li", {}, h("button", { type: "button", class: "link", onclick: signOut }, "Sign out")));
  } else {
    items.push(link("#/signin", "Sign in"), link("#/signup", "Sign up"));
  }
  document.getElementById("nav").replaceChildren(...items);
}

function renderHood(calls) {
  const rows = calls.map((call, index) => h("tr", {},
    h("td", {}, index + 1),
    h("td", { class: "request" }, `${call.method} ${call.path}`),
    h("td", {}, call.status),
    h("td", {}, call.servedBy || "—"),
    h("td", { class: call.cache ? `cache-${call.cache}` : "" }, call.cache || "—"),
    h("td", {}, call.roundTrips === "" ? "—" : call.roundTrips),
    h("td", {}, call.ms === null ? "…" : `${call.ms.toFixed(1)} ms`)));
  document.getElementById("hood-rows").replaceChildren(
    ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: "7" }, "No API call yet."))]));
}

async function signOut() {
  try { await api("DELETE", "/v1/sessions/current", { auth: true }); } catch { /* signed out here either way */ }
  saveSession(null);
  flash("You are signed out.");
  go("#/");
}

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function needSession() {
  if (session()) return true;
  show("Sign in needed", h("p", {}, "Please ", h("a", { href: "#/signin" }, "sign in"), " first."));
  return false;
}

// ---- browse ----------------------------------------------------------------------------------

function toCents(text) {
  const value = String(text).trim();
  return value === "" ? "" : String(Math.round(Number(value) * 100));
}

async function browse(params) {
  const query = {
    q: params.get("q") || "", category: params.get("category") || "", sort: params.get("sort") || "newest",
    min_price: params.get("min_price") || "", max_price: params.get("max_price") || "",
    page: params.get("page") || "1",
  };
  const categoriesBox = h("aside", { class: "categories", "aria-labelledby": "categories-title" },
    h("h2", { id: "categories-title" }, "Categories"), h("p", {}, "Loading…"));
  const results = h("section", { class: "results", "aria-live": "polite", "aria-label": "Products" }, h("p", {}, "Loading…"));
  const search = h("input", { type: "search", name: "q", value: query.q, maxlength: "100" });
  const category = h("select", { name: "category" }, h("option", { value: "" }, "All categories"));
  const sort = h("select", { name: "sort" }, SORTS.map(([value, label]) =>
    h("option", { value, selected: value === query.sort }, label)));
  const minPrice = h("input", { type: "number", name: "min_price", min: "0", step: "0.01", inputmode: "decimal",
    value: query.min_price ? String(Number(query.min_price) / 100) : "" });
  const maxPrice = h("input", { type: "number", name: "max_price", min: "0", step: "0.01", inputmode: "decimal",
    value: query.max_price ? String(Number(query.max_price) / 100) : "" });
  const form = h("form", { class: "filters", role: "search", onsubmit: (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    const set = (name, value) => { if (value) next.set(name, value); };
    set("q", search.value.trim()); set("category", category.value);
    set("min_price", toCents(minPrice.value)); set("max_price", toCents(maxPrice.value));
    if (sort.value !== "newest") next.set("sort", sort.value);
    go(`#/?${next}`);
  } }, field("Search", search), field("Category", category), field("Lowest price", minPrice),
  field("Highest price", maxPrice), field("Sort by", sort), h("button", { type: "submit" }, "Search"));
  show(query.q ? `Results for “${query.q}”` : "Shop", form, h("div", { class: "browse" }, categoriesBox, results));

  const listing = new URLSearchParams({ per_page: String(PER_PAGE) });
  for (const [name, value] of Object.entries(query)) if (value) listing.set(name, value);
  const [categories, products] = await Promise.allSettled([
    api("GET", "/v1/categories"), api("GET", `/v1/products?${listing}`)]);

  if (categories.status === "fulfilled") {
    const items = categories.value.items;
    for (const item of items) {
      category.append(h("option", { value: item.slug, selected: item.slug === query.category }, item.name));
    }
    const link = (slug, text, count) => {
      const next = new URLSearchParams(); if (slug) next.set("category", slug);
      return h("li", {}, h("a", { href: `#/?${next}`, "aria-current": slug === query.category ? "page" : null },
        text), count === null ? "" : h("span", { class: "count" }, ` (${count})`));
    };
    categoriesBox.replaceChildren(categoriesBox.firstChild,
      h("ul", {}, link("", "All", null), items.map((item) => link(item.slug, item.name, item.product_count))));
  } else {
    categoriesBox.replaceChildren(categoriesBox.firstChild, errorBox(categories.reason));
  }

  if (products.status === "rejected") { results.replaceChildren(errorBox(products.reason)); return; }
  const list = products.value;
  if (!list.items.length) { results.replaceChildren(h("p", {}, "No product matches.")); return; }
  const pageLink = (page, text) => {
    const next = new URLSearchParams(params); next.set("page", String(page));
    return h("a", { href: `#/?${next}`, class: "button" }, text);
  };
  results.replaceChildren(
    h("p", { class: "hint" }, `${list.total} product${list.total === 1 ? "" : "s"}`),
    h("ul", { class: "cards" }, list.items.map((product) => h("li", { class: "card" },
      h("h2", {}, h("a", { href: `#/p/${encodeURIComponent(product.id)}` }, product.name)),
      h("p", { class: "price" }, price(product.price_cents, product.currency)),
      h("p", {}, `Rating: ${stars(product.rating.average)} (${product.rating.count})`),
      h("p", { class: "hint" }, product.category)))),
    h("nav", { class: "pages", "aria-label": "Pages" },
      list.page > 1 ? pageLink(list.page - 1, "← Previous") : "",
      h("span", {}, `Page ${list.page} of ${Math.max(list.pages, 1)}`),
      list.page < list.pages ? pageLink(list.page + 1, "Next →") : ""));
}

// ---- the product page ------------------------------------------------------------------------

async function productPage(id) {
  show("Product", h("p", {}, "Loading…"));
  let view;
  try {
    view = await api("GET", `/v1/products/${encodeURIComponent(id)}`);
  } catch (error) {
    show("Product", errorBox(error)); return;
  }
  const { product, seller, rating, reviews } = view;
  const me = session();
  const mine = me && me.user_id === product.seller_id;
  const categoryLink = h("a", { href: `#/?${new URLSearchParams({ category: view.category.slug })}` }, view.category.name);
  const details = h("dl", { class: "facts" },
    h("dt", {}, "Price"), h("dd", { class: "price" }, price(product.price_cents, product.currency)),
    h("dt", {}, "Category"), h("dd", {}, categoryLink),
    h("dt", {}, "Seller"), h("dd", {}, seller ? seller.display_name : "unknown seller"),
    h("dt", {}, "Rating"), h("dd", { class: "rating" }, `${stars(rating.average)} from ${rating.count} review${rating.count === 1 ? "" : "s"}`),
    h("dt", {}, "In stock"), h("dd", {}, String(product.stock)),
    product.tags.length ? [h("dt", {}, "Tags"), h("dd", {}, product.tags.join(", "))] : "");
  const reviewList = h("ol", { class: "reviews" }, reviews.map((review) => h("li", { class: "review" },
    h("p", { class: "review-head" }, h("strong", { class: "author" }, review.author ? review.author.display_name : "a former user"),
      ` · ${review.rating} / 5 · ${when(review.created_at)}`),
    h("p", { class: "review-text" }, review.text))));
  const own = mine ? h("p", { class: "actions" },
    h("a", { class: "button", href: `#/p/${encodeURIComponent(id)}/edit` }, "Edit this product")) : "";
  show(product.name, details, h("p", { class: "description" }, product.description), own,
    h("section", { "aria-labelledby": "reviews-title" },
      h("h2", { id: "reviews-title" }, "Latest reviews"),
      reviews.length ? reviewList : h("p", {}, "No review yet."),
      me && !mine ? reviewForm(id) : "",
      !me ? h("p", {}, h("a", { href: "#/signin" }, "Sign in"), " to write a review.") : ""));
  performance.mark("product-rendered");  // the product page's first render, for measuring (README)
}

function reviewForm(id) {
  const rating = h("select", { name: "rating", required: true },
    [5, 4, 3, 2, 1].map((n) => h("option", { value: String(n) }, `${n} / 5`)));
  const text = h("textarea", { name: "text", rows: "4", maxlength: "2000" });
  const status = h("div", { "aria-live": "polite" });
  return h("form", { class: "review-form", "aria-labelledby": "review-form-title", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await api("POST", `/v1/products/${encodeURIComponent(id)}/reviews`,
        { auth: true, body: { rating: Number(rating.value), text: text.value } });
      notice("Thank you: your review is published.");
      await productPage(id);
    } catch (error) {
      status.replaceChildren(error.status === 409
        ? h("p", { class: "notice error", role: "alert" }, "You have already reviewed this product: one review per product.")
        : errorBox(error));
    }
  } }, h("h3", { id: "review-form-title" }, "Write a review"), field("Rating", rating), field("Your review", text),
  status, h("button", { type: "submit" }, "Publish review"));
}

// ---- selling ---------------------------------------------------------------------------------

function productForm(product, onSave) {
  const input = (name, attrs) => h("input", { name, ...attrs });
  const controls = {
    name: input("name", { required: true, maxlength: "120", value: product?.name ?? "" }),
    description: h("textarea", { name: "description", rows: "5", maxlength: "5000" }, product?.description ?? ""),
    price: input("price", { type: "number", required: true, min: "0", step: "0.01", inputmode: "decimal",
      value: product ? String(product.price_cents / 100) : "" }),
    currency: input("currency", { required: true, pattern: "[A-Z]{3}", maxlength: "3", value: product?.currency ?? "EUR" }),
    category: input("category", { required: true, pattern: "[a-z0-9]+(-[a-z0-9]+)*", maxlength: "40",
      value: product?.category ?? "" }),
    tags: input("tags", { value: product ? product.tags.join(", ") : "" }),
    stock: input("stock", { type: "number", min: "0", step: "1", value: String(product?.stock ?? 1) }),
  };
  const status = h("div", { "aria-live": "polite" });
  return h("form", { class: "product-form", onsubmit: async (event) => {
    event.preventDefault();
    const body = {
      name: controls.name.value.trim(), description: controls.description.value,
      price_cents: Math.round(Number(controls.price.value) * 100), currency: controls.currency.value.trim(),
      category: controls.category.value.trim(),
      tags: controls.tags.value.split(",").map((tag) => tag.trim()).filter(Boolean),
      stock: Number(controls.stock.value || 0),
    };
    try { await onSave(body); } catch (error) { status.replaceChildren(errorBox(error)); }
  } }, field("Name", controls.name), field("Description", controls.description),
  field("Price", controls.price), field("Currency", controls.currency, "Three capital letters, e.g. EUR"),
  field("Category", controls.category, "Lower-case words joined by hyphens, e.g. kitchen-tools"),
  field("Tags", controls.tags, "Comma-separated, lower-case"), field("Stock", controls.stock), status,
  h("button", { type: "submit" }, product ? "Save changes" : "Put on sale"));
}

function sell() {
  if (!needSession()) return;
  show("Sell a product", productForm(null, async (body) => {
    const created = await api("POST", "/v1/products", { auth: true, body });
    flash("Your product is on sale.");
    go(`#/p/${encodeURIComponent(created.id)}`);
  }));
}

async function editProduct(id) {
  if (!needSession()) return;
  let view;
  try { view = await api("GET", `/v1/products/${encodeURIComponent(id)}`); } catch (error) {
    show("Edit product", errorBox(error)); return;
  }
  const path = `/v1/products/${encodeURIComponent(id)}`;
  const remove = h("button", { type: "button", class: "danger", onclick: async () => {
    if (remove.dataset.armed !== "yes") {
      remove.dataset.armed = "yes"; remove.textContent = "Really delete? Press again"; return;
    }
    try {
      await api("DELETE", path, { auth: true });
      flash("The product is deleted."); go("#/");
    } catch (error) { main.append(errorBox(error)); }
  } }, "Delete this product");
  show(`Edit “${view.product.name}”`, productForm(view.product, async (body) => {
    await api("PATCH", path, { auth: true, body });
    flash("Saved."); go(`#/p/${encodeURIComponent(id)}`);
  }), h("p", { class: "actions" }, remove));
}

// ---- accounts --------------------------------------------------------------------------------

function accountForm(title, withName, submitLabel, onSubmit) {
  const email = h("input", { type: "email", name: "email", required: true, autocomplete: "email" });
  const password = h("input", { type: "password", name: "password", required: true, minlength: withName ? "8" : null,
    autocomplete: withName ? "new-password" : "current-password" });
  const name = withName ? h("input", { name: "display_name", required: true, maxlength: "80", autocomplete: "nickname" }) : null;
  const status = h("div", { "aria-live": "polite" });
  show(title, h("form", { class: "account-form", onsubmit: async (event) => {
    event.preventDefault();
    try { await onSubmit(email.value.trim(), password.value, name ? name.value.trim() : null); } catch (error) {
      status.replaceChildren(errorBox(error));
    }
  } }, field("Email", email), field("Password", password, withName ? "At least 8 characters" : null),
  name ? field("Display name", name) : "", status, h("button", { type: "submit" }, submitLabel)));
}

async function startSession(email, password) {
  const created = await api("POST", "/v1/sessions", { body: { email, password } });
  saveSession(created);
}

function signUp() {
  accountForm("Sign up", true, "Create my account", async (email, password, displayName) => {
    await api("POST", "/v1/users", { body: { email, password, display_name: displayName } });
    await startSession(email, password);
    flash(`Welcome, ${displayName}.`); go("#/");
  });
}

function signIn() {
  accountForm("Sign in", false, "Sign in", async (email, password) => {
    await startSession(email, password);
    flash("You are signed in."); go("#/");
  });
}

async function account() {
  if (!needSession()) return;
  let me;
  try { me = await api("GET", "/v1/users/me", { auth: true }); } catch (error) {
    show("My account", errorBox(error)); return;
  }
  const name = h("input", { name: "display_name", required: true, maxlength: "80", value: me.display_name });
  const bio = h("textarea", { name: "bio", rows: "4", maxlength: "1000" }, me.bio);
  const status = h("div", { "aria-live": "polite" });
  const exportStatus = h("div", { "aria-live": "polite" });
  const exportButton = h("button", { type: "button", onclick: async () => {
    exportButton.disabled = true;
    exportStatus.replaceChildren(h("p", {}, "Preparing your data…"));
    try {
      const accepted = await api("POST", "/v1/users/me/export", { auth: true });
      const job = await waitForJob(accepted.job_id, () => {});
      if (!job) return;  // the page was left
      if (job.status !== "succeeded") throw new Error(job.error || "the export failed");
      const file = new Blob([JSON.stringify(job.result, null, 2)], { type: "application/json" });
      exportStatus.replaceChildren(h("p", {}, "Your data is ready: ",
        h("a", { href: URL.createObjectURL(file), download: "scaleshop-export.json" }, "download scaleshop-export.json")));
    } catch (error) { exportStatus.replaceChildren(errorBox(error)); }
    exportButton.disabled = false;
  } }, "Export my data");
  show("My account", h("p", {}, `Signed in as ${me.email}`),
    h("form", { class: "profile-form", onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api("PATCH", "/v1/users/me", { auth: true, body: { display_name: name.value.trim(), bio: bio.value } });
        status.replaceChildren(h("p", { class: "notice" }, "Your profile is saved."));
      } catch (error) { status.replaceChildren(errorBox(error)); }
    } }, field("Display name", name), field("About me", bio), status, h("button", { type: "submit" }, "Save profile")),
    h("section", { "aria-labelledby": "export-title" }, h("h2", { id: "export-title" }, "My data"),
      h("p", {}, "A copy of your account, your products and your reviews, as JSON."), exportButton, exportStatus));
}

// ---- importing -------------------------------------------------------------------------------

function importPage() {
  if (!needSession()) return;
  const file = h("input", { type: "file", name: "file", accept: ".json,application/json", required: true });
  const bar = h("progress", { max: "1", value: "0", "aria-label": "Import progress" });
  const percent = h("span", { class: "percent" }, "");
  const status = h("div", { "aria-live": "polite" });
  const outcome = h("div", {});
  const form = h("form", { class: "import-form", onsubmit: async (event) => {
    event.preventDefault();
    outcome.replaceChildren();
    const chosen = file.files[0];
    if (!chosen) return;
    const text = await chosen.text();
    try {
      const accepted = await api("POST", "/v1/imports", { auth: true, raw: text });
      status.replaceChildren(h("p", {}, "Import queued…"));
      const job = await waitForJob(accepted.job_id, (current) => {
        const { done, total } = current.progress;
        bar.max = Math.max(total, 1); bar.value = done;
        percent.textContent = `${total ? Math.floor((100 * done) / total) : 0} % (${done} of ${total})`;
        status.replaceChildren(h("p", {}, `Import ${current.status}…`));
      });
      if (!job) return;  // the page was left
      const result = job.result || {};
      const rejected = Array.isArray(result.rejected) ? result.rejected : [];
      status.replaceChildren(h("p", { class: job.status === "succeeded" ? "notice" : "notice error" },
        job.status === "succeeded"
          ? `Import finished: ${result.imported} imported, ${rejected.length} rejected.`
          : `The import failed: ${job.error || "unknown error"}`));
      if (rejected.length) {
        outcome.replaceChildren(h("h2", {}, "Rejected items"), h("ul", { class: "rejected" }, rejected.map((item) =>
          h("li", {}, `Item ${item.index + 1} (index ${item.index}): ${item.field} — ${item.reason}`
            + (item.more_errors ? ` (and ${item.more_errors} more)` : "")))));
      }
    } catch (error) { status.replaceChildren(errorBox(error)); }
  } }, field("Products file (a JSON array, up to 10,000 products)", file),
  h("button", { type: "submit" }, "Import"));
  show("Import products", form, h("div", { class: "progress" }, bar, percent), status, outcome);
}

// ---- router ----------------------------------------------------------------------------------

async function route() {
  newPage();
  notice(flashed);
  flashed = "";
  renderNav();
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "p" && parts[1] && parts[2] === "edit") await editProduct(parts[1]);
  else if (parts[0] === "p" && parts[1]) await productPage(parts[1]);
  else if (parts[0] === "sell") sell();
  else if (parts[0] === "import") importPage();
  else if (parts[0] === "signin") signIn();
  else if (parts[0] === "signup") signUp();
  else if (parts[0] === "me") await account();
  else await browse(params);
  main.querySelector("h1")?.focus({ preventScroll: true });
}

onCall(renderHood);
window.addEventListener("hashchange", () => route());
window.addEventListener("DOMContentLoaded", () => route());
