-- Argo CD health check for gemma.dev/GemmaDeployment.
-- Register it in argocd-cm under resource.customizations.health.gemma.dev_GemmaDeployment
-- (examples/03-argocd/README.md). Argo CD runs it with `obj` (the live object) and reads
-- hs.status (Healthy | Progressing | Degraded) and hs.message.
--
-- Order matters: a status written for an older generation says nothing about the current
-- spec, so staleness is checked before the conditions are believed.
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or (status.phase == nil and status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for gemma-operator to plan this GemmaDeployment."
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for gemma-operator to observe generation " .. tostring(generation) .. "."
  return hs
end

local ready = condition(status.conditions, "Ready")
local stalled = condition(status.conditions, "Stalled")
local progressing = condition(status.conditions, "Progressing")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  local reason = stalled.reason or status.phase or "Stalled"
  hs.message = reason .. ": " .. describe(stalled, "see kubectl describe gemmadeployment.")
  return hs
end

if status.phase == "Degraded" or status.phase == "NoFit" or status.phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = status.phase .. ": " .. describe(ready, "see kubectl describe gemmadeployment.")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  if status.endpoint ~= nil then
    hs.message = describe(ready, "Ready.") .. " Endpoint: " .. status.endpoint
  else
    hs.message = describe(ready, "Ready.")
  end
  return hs
end

hs.status = "Progressing"
if progressing ~= nil and progressing.status == "True" then
  hs.message = describe(progressing, "Deploying.")
else
  hs.message = describe(ready, (status.phase or "Planning") .. ".")
end
return hs
