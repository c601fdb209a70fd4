-- Argo CD health check for tiered.dev/RoutingPolicy (Lua 5.1, no libraries: runs in Argo CD's sandbox).
--
-- Healthy:     the operator observed the current generation and Ready=True.
-- Progressing: the operator has not observed this generation yet, the Ready condition is missing or stale,
--              or Ready is Unknown / False with a transient reason (a listed tier not created yet, the router
--              config being rolled out, ...).
-- Degraded:    Stalled=True (the operator's signal for what will not fix itself), or Ready=False with one
--              of the terminal reasons below.
-- The operator sets Stalled=True for terminal problems; the reason list is a second line of defence. It holds
-- reasons the operator writes (tests/unit/gitops checks that) and is documented in docs/gitops.md.
local TERMINAL_REASONS = {
  UnsupportedSpec = true,
  InvalidRouterConfig = true,
  ResidencyForbidden = true,
  NoPermittedTier = true,
  ResidencyLabelInvalid = true,
}

local hs = {}

local function find_condition(conditions, condition_type)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

local function describe(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.reason .. ": " .. condition.message
  end
  return condition.reason
end

local generation = obj.metadata.generation
local status = obj.status

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the RoutingPolicy"
  return hs
end

if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (status describes generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local stalled = find_condition(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local ready = find_condition(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  if ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  else
    hs.message = "Ready"
  end
  return hs
end

if ready.status == "False" and TERMINAL_REASONS[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready)
return hs
