import { defineConfig } from "vite";

// The page is served by the runtime (gpt_runtime.webui) at "/", its files at "/assets/<name>-<hash>.<ext>".
// Everything is bundled (no CDN) and nothing is inlined: the Content-Security-Policy allows only 'self' scripts
// and styles.
export default defineConfig({
  base: "/",
  build: {
    outDir: "../runtime/gpt_runtime/webui/dist",
    emptyOutDir: true,
    assetsDir: "assets",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
    reportCompressedSize: false,
  },
  server: {
    // `npm run dev` next to a runtime on :8000 (hack/run.sh)
    proxy: {
      "^/(auth|conversations|generate|upload|files|usage|v1|voices|synthesize|transcribe|jobs)": "http://127.0.0.1:8000",
      "/ws": { target: "ws://127.0.0.1:8000", ws: true },
    },
  },
});
