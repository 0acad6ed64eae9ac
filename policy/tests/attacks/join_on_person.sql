-- expect: prohibited-column
-- A self-join on the unit is fine; filtering on the unit is not.
SELECT a.gender, COUNT(*) FROM residents a JOIN residents b ON a.person_id = b.person_id WHERE b.person_id = 42 GROUP BY a.gender
