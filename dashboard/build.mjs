// `make dashboard`: bundle dashboard/src into dashboard/dist (git-ignored) with esbuild, so
// the page needs no CDN: app.js + app.css (uPlot's CSS included), index.html, and a default
// config.json (the local API) that a deployment overwrites.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dist");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: { app: join(here, "src", "main.js") },
  outdir: out,
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome100", "firefox100", "safari15"],
  platform: "browser",
  legalComments: "linked",
  sourcemap: false,
  logLevel: "warning",
  define: { "process.env.NODE_ENV": '"production"' },
});
await copyFile(join(here, "index.html"), join(out, "index.html"));
await copyFile(join(here, "config.example.json"), join(out, "config.json"));
console.log(`dashboard built in ${out}`);
