-- Health of an anypost.com SendingDomain, for Argo CD.
--
-- The kstatus conditions decide first: Stalled=True is Degraded, Reconciling=True
-- or a status.observedGeneration behind metadata.generation is Progressing. An
-- object written by an operator that does not set them yet is judged by its Ready
-- condition's reason instead, with the same outcome.
--
-- A domain whose keys and records are in place but whose owner has not (or not
-- correctly) published the CNAMEs in status.dnsRecords is Suspended, not
-- Progressing: nothing in the cluster moves it on; it waits for an event outside,
-- the owner's change at their DNS provider, which may take days or never come.
-- Progressing would keep the Application "Progressing" for as long as any one
-- customer has not published, as if a rollout were still under way, and would hide
-- real rollouts behind it. Suspended ranks below Progressing, so the Application
-- shows what is really happening, and the message says what the owner must fix.
-- Both keep a sync wave waiting (Argo CD moves past a resource only once it is
-- Healthy) and neither fails a sync.
--
-- Only Lua's base and table functions are used: Argo CD runs scripts from
-- argocd-cm without the other standard libraries.

local hs = {}

local function condition(conditions, type)
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function said(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

-- Ready reasons that no retry fixes: someone must change the SendingDomain, the
-- other claim, the Secret in the way, the identity key or the claim policy.
local needs_a_human = {
  InvalidDomain = true,
  PublicSuffix = true,
  DomainConflict = true,
  SecretConflict = true,
  IdentityMismatch = true,
  NotAllowed = true,
}

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the SendingDomain"
  return hs
end
local conditions = obj.status.conditions

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    .. " (status describes generation " .. tostring(observed) .. ")"
  return hs
end

local stalled = condition(conditions, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = said(stalled, "The operator cannot make progress: " .. tostring(stalled.reason))
  return hs
end

local reconciling = condition(conditions, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = said(reconciling, "The operator is making keys and records")
  return hs
end

local ready = condition(conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

if ready.status == "True" then
  if ready.reason == "GracePeriod" then
    -- Still sending, but the owner's CNAMEs are gone: it returns to pending when
    -- the grace period ends unless they are published again.
    hs.status = "Degraded"
  else
    hs.status = "Healthy"
  end
  hs.message = said(ready, "The domain is verified and can send")
  return hs
end

if needs_a_human[ready.reason] then
  hs.status = "Degraded"
  hs.message = said(ready, ready.reason)
  return hs
end

if ready.status ~= "False"
  or not is_true(condition(conditions, "KeysReady"))
  or not is_true(condition(conditions, "RecordsPublished")) then
  hs.status = "Progressing"
  hs.message = said(ready, "The operator is making keys and records")
  return hs
end

-- Keys made, records served: waiting for the owner's DNS (reason Pending, or a
-- verification failure such as ApexCnameMissing, whose message says what to fix).
hs.status = "Suspended"
hs.message = said(ready, "Waiting for the CNAMEs in status.dnsRecords to be published")
return hs
