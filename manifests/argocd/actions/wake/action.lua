-- wake a sleeping deployment for 2 hours (kubectl gptd wake)
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
-- UTC fields + 2h, normalised by os.time/os.date as if local (both sides alike): Argo CD's os.date drops "!"
-- when given a time, so os.date("!...", os.time() + 7200) would print local time
local later = os.date("!*t")
later.hour = later.hour + 2
obj.metadata.annotations["serving.gpt-operator.dev/wake-until"] = os.date("%Y-%m-%dT%H:%M:%SZ", os.time(later))
return obj
