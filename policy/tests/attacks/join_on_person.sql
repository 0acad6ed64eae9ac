-- expect: prohibited-column
SELECT a.gender, COUNT(*) FROM residents a JOIN residents b ON a.person_id = b.person_id GROUP BY a.gender
